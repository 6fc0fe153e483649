//go:build linux

package lab

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// Operator mistakes and settings, driven through the real binary the way
// an operator would: a busy port, a shared state directory, a second
// server, a login expiration. Each must be refused or applied without
// side effects on what already runs.

// waitExitError waits up to timeout for p to exit; it fails t (and goes on, so that the test also checks what
// the process did) unless p exits with a non-zero status in that time.
func waitExitError(t *testing.T, p *Proc, timeout time.Duration) {
	t.Helper()
	start := time.Now()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case <-p.Done():
	case <-timer.C:
		t.Errorf("%s still runs %v after its start; want it to exit with an error. Output:\n%s", p.Name, timeout, tail(p.Output(), 30))
		return
	}
	_, err := p.Exited()
	t.Logf("%s exited after %.2fs with %v", p.Name, time.Since(start).Seconds(), err)
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() == 0 {
		t.Errorf("%s exited with %v; want a non-zero exit status (so systemd restarts or reports it). Output:\n%s", p.Name, err, tail(p.Output(), 30))
	}
}

// adminPeer is the part of `meshd admin peers list --json` these tests read.
type adminPeer struct {
	ID                     string `json:"id"`
	Name                   string `json:"name"`
	OverlayIP              string `json:"overlay_ip"`
	LoginExpirationEnabled bool   `json:"login_expiration_enabled"`
}

// adminKey is the part of `meshd admin setup-keys list --json` these tests
// read.
type adminKey struct {
	ID   string `json:"id"`
	Used int    `json:"used"`
}

// TestOpAgentBusyPortRegistersNothing: an agent whose WireGuard port is
// taken on its machine must exit non-zero within seconds, naming --port,
// and must not register: no new peer on the server, no setup-key use.
func TestOpAgentBusyPortRegistersNothing(t *testing.T) {
	ctx := context.Background()
	l := New(t)
	if testing.Short() {
		t.Skip("lab: end-to-end with the meshd binary; skipped with -short")
	}
	srv := StartServer(ctx, t, l.Host("srv", nil))
	a := l.Host("a", l.Router("ra", Home))
	l.Step("meshd all started")

	var peersBefore []adminPeer
	var keysBefore []adminKey
	Must(t, srv.AdminJSON(ctx, &peersBefore, "peers", "list"))
	Must(t, srv.AdminJSON(ctx, &keysBefore, "setup-keys", "list"))
	if len(keysBefore) == 0 {
		t.Fatal("meshd all made no setup key for its join line")
	}

	// Another program holds the agent's UDP port on a.
	if _, err := a.ListenUDP(netip.AddrPortFrom(netip.IPv4Unspecified(), AgentPort)); err != nil {
		t.Fatal(err)
	}
	ag := NewAgent(t, a, srv.Join)
	Must(t, ag.Launch())
	waitExitError(t, ag.Proc, 15*time.Second)
	l.Step("agent on a busy port exited")
	out := ag.Proc.Output()
	if !strings.Contains(out, "--port") || !strings.Contains(out, fmt.Sprint(AgentPort)) {
		t.Errorf("the agent's output does not name --port and the busy port %d:\n%s", AgentPort, tail(out, 30))
	}

	var peersAfter []adminPeer
	var keysAfter []adminKey
	Must(t, srv.AdminJSON(ctx, &peersAfter, "peers", "list"))
	Must(t, srv.AdminJSON(ctx, &keysAfter, "setup-keys", "list"))
	if len(peersAfter) != len(peersBefore) {
		t.Errorf("the agent that could not run registered anyway: %d peers before, %d after: %+v", len(peersBefore), len(peersAfter), peersAfter)
	}
	used := func(ks []adminKey) map[string]int {
		m := map[string]int{}
		for _, k := range ks {
			m[k.ID] = k.Used
		}
		return m
	}
	ub, ua := used(keysBefore), used(keysAfter)
	for id, n := range ua {
		if n != ub[id] {
			t.Errorf("setup key %s: used %d times before, %d after the agent that could not run", id, ub[id], n)
		}
	}
}

// TestOpAgentStateLocked: a second agent started with the state directory
// of a running one (its own --iface, --socket and --port) must exit
// non-zero naming the lock and the first agent's PID; the first keeps its
// identity and its tunnels.
func TestOpAgentStateLocked(t *testing.T) {
	ctx := context.Background()
	l := New(t)
	a := l.Host("a", l.Router("ra", Home))
	b := l.Host("b", l.Router("rb", Home))
	_, ag := startMesh(ctx, t, l, a, b)
	connect(ctx, t, ag[0], ag[1], 30*time.Second)
	before, err := ag[0].Status(ctx)
	Must(t, err)
	l.Step("a pings b")

	second := NewAgent(t, a, ag[0].Join)
	second.State = ag[0].State
	second.Port = AgentPort + 1
	second.Socket = filepath.Join(filepath.Dir(ag[0].Socket), "a-second.sock")
	Must(t, second.Launch())
	waitExitError(t, second.Proc, 15*time.Second)
	second.Proc.Stop() // when it did not exit (the failure above)
	l.Step("second agent on a's state exited")
	out := second.Proc.Output()
	if !strings.Contains(out, "lock") || !strings.Contains(out, fmt.Sprintf("pid %d", ag[0].Proc.PID)) {
		t.Errorf("the second agent's output names neither the lock nor the first agent's pid %d:\n%s", ag[0].Proc.PID, tail(out, 30))
	}

	after, err := ag[0].Status(ctx)
	Must(t, err)
	if after.Self.PublicKey != before.Self.PublicKey || after.Self.OverlayIP != before.Self.OverlayIP || after.Self.Name != before.Self.Name {
		t.Errorf("a's identity changed: before %s %s %s, after %s %s %s", before.Self.Name, before.Self.PublicKey, before.Self.OverlayIP,
			after.Self.Name, after.Self.PublicKey, after.Self.OverlayIP)
	}
	if exited, err := ag[0].Proc.Exited(); exited {
		t.Fatalf("the first agent exited: %v", err)
	}
	if got, pings := pingSeries(ctx, a, ag[1].OverlayIP(), 10); got < 9 {
		t.Errorf("a → b after the second agent: %d of 10 pings answered:\n%s", got, pings)
	}
	connect(ctx, t, ag[1], ag[0], 10*time.Second)
	// The lock file still names the first agent, not the one refused.
	if b, err := os.ReadFile(filepath.Join(ag[0].State, "lock")); err != nil || strings.TrimSpace(string(b)) != fmt.Sprint(ag[0].Proc.PID) {
		t.Errorf("a's state directory: lock file %q (%v), want the first agent's pid %d", b, err, ag[0].Proc.PID)
	}
	l.Step("a keeps its identity and its tunnel")
}

// TestOpSecondServerBusyPorts: a second `meshd all` on the same host with
// another --data and the same ports must exit non-zero naming the port and
// the flag, create nothing in its data directory, and leave the first
// server serving its agents.
func TestOpSecondServerBusyPorts(t *testing.T) {
	ctx := context.Background()
	l := New(t)
	a := l.Host("a", l.Router("ra", Home))
	b := l.Host("b", l.Router("rb", Home))
	srv, ag := startMesh(ctx, t, l, a, b)
	connect(ctx, t, ag[0], ag[1], 30*time.Second)
	l.Step("a pings b")

	data2 := filepath.Join(l.Dir(), "srv-data2")
	ip := srv.Host.IP().String()
	p, err := srv.Host.Start("meshd-all-2", srv.bin, "all",
		"--data", data2,
		"--listen", fmt.Sprintf("%s:%d", ip, ControlPort),
		"--public-url", srv.URL,
		"--stun-listen", fmt.Sprintf("%s:%d", ip, STUNPort),
	)
	Must(t, err)
	waitExitError(t, p, 20*time.Second)
	p.Stop() // when it did not exit (the failure above)
	l.Step("second meshd all exited")
	out := p.Output()
	if !strings.Contains(out, fmt.Sprint(ControlPort)) || !regexp.MustCompile(`--listen|--stun-listen`).MatchString(out) {
		t.Errorf("the second server's output names neither the busy port %d nor --listen/--stun-listen:\n%s", ControlPort, tail(out, 30))
	}
	if joinLine.MatchString(out) {
		t.Errorf("the second server printed a join line (it made a network):\n%s", tail(out, 30))
	}
	entries, err := os.ReadDir(data2)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	if len(entries) > 0 {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Errorf("the second server left %s in its data directory; want it empty or absent", strings.Join(names, ", "))
	}

	// The first server still serves: its admin API, its agents' control
	// streams, and a fresh login.
	var peers []adminPeer
	Must(t, srv.AdminJSON(ctx, &peers, "peers", "list"))
	if len(peers) != 2 {
		t.Errorf("the first server lists %d peers, want 2: %+v", len(peers), peers)
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	_, err = ag[0].WaitStatus(wctx, "control connected", func(st *Status) bool { return st.Self.Control.State == "connected" })
	cancel()
	Must(t, err)
	Must(t, ag[1].Restart(ctx))
	connect(ctx, t, ag[1], ag[0], 30*time.Second)
	l.Step("first server still serves")
}
