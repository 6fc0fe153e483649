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

	"meshd/internal/control"
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
	if testing.Short() {
		t.Skip("lab: end-to-end with the meshd binary; skipped with -short")
	}
	l := New(t)
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

// adminText runs `meshd admin --data DIR ARGS...` without --json on the
// server's host, as an operator reads it, and returns stdout and stderr.
func adminText(ctx context.Context, srv *Server, args ...string) (string, string, error) {
	full := append([]string{"netns", "exec", srv.Host.Namespace(), srv.bin, "admin", "--data", srv.Data}, args...)
	cmd := exec.CommandContext(ctx, "ip", full...)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	srv.Host.lab.record("[" + srv.Host.Name() + "] meshd admin " + strings.Join(args, " "))
	err := cmd.Run()
	if err != nil {
		err = fmt.Errorf("meshd admin %s: %v: %s%s", strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String(), stderr.String(), err
}

// Timers that bound the login expiration test: how often control cuts
// expired logins, and how often a cut-off agent asks again (a copy of
// internal/agent's unexported loginExpiredRetry).
const (
	janitorInterval   = control.DefaultJanitorInterval
	loginExpiredRetry = time.Minute
)

// TestOpLoginExpirationSparesSetupKeyPeers: with the account's login
// expiration at 1m, peers joined with a setup key stay connected past
// their expiry and a janitor sweep; a peer an admin opted in is cut off
// (needs-login) in that time; the account update counts only opted-in
// peers; turning the expiration off brings the cut-off peer back.
//
// The opt-in happens at the start, not after the wait, so one wait past
// the expiry covers both: the exempt peers joined at the same time as the
// opted-in one, so the sweep that cuts it off saw theirs expired too.
func TestOpLoginExpirationSparesSetupKeyPeers(t *testing.T) {
	ctx := context.Background()
	l := New(t)
	a := l.Host("a", l.Router("ra", Home))
	b := l.Host("b", l.Router("rb", Home))
	c := l.Host("c", nil)
	srv, ag := startMesh(ctx, t, l, a, b, c)
	joined := time.Now() // every peer's last login is before this
	connect(ctx, t, ag[1], ag[2], 30*time.Second)
	connect(ctx, t, ag[0], ag[1], 30*time.Second)
	l.Step("a, b, c connected")

	const expiration = time.Minute
	stdout, stderr, err := adminText(ctx, srv, "account", "update", "--login-expiration", "1m")
	Must(t, err)
	if !regexp.MustCompile(`logins expired:\s+0\n`).MatchString(stdout) || strings.Contains(stderr, "warning") {
		t.Errorf("account update --login-expiration 1m: want \"logins expired: 0\" and no warning, got:\n%s%s", stdout, stderr)
	}
	sa, err := ag[0].Status(ctx)
	Must(t, err)
	// A failure here goes on: what follows shows whether b and c are spared.
	var pa adminPeer
	if err := srv.AdminJSON(ctx, &pa, "peers", "update", sa.Self.Name, "--login-expiration", "on"); err != nil || !pa.LoginExpirationEnabled {
		t.Errorf("peers update %s --login-expiration on: the peer is not opted in: %+v %v", sa.Self.Name, pa, err)
	}
	l.Step("expiration 1m, a opted in")

	// Poll until every login is past its expiry plus one janitor sweep:
	// b and c must never need a login; a must, not before its expiry.
	deadline := joined.Add(expiration + janitorInterval + 15*time.Second)
	var aCut time.Time
	var notConnected int
	for i := 0; i < 1000 && time.Now().Before(deadline); i++ {
		for _, x := range ag[1:] {
			st, err := x.Status(ctx)
			Must(t, err)
			if st.State == "needs-login" {
				t.Fatalf("%s, joined with a setup key and not opted in, was cut off %.0fs after joining: %s",
					x.Host.Name(), time.Since(joined).Seconds(), st.State)
			}
			if st.Self.Control.State != "connected" {
				notConnected++
			}
		}
		if aCut.IsZero() {
			st, err := ag[0].Status(ctx)
			Must(t, err)
			if st.State == "needs-login" {
				aCut = time.Now()
				if aCut.Before(joined.Add(-5 * time.Second).Add(expiration)) {
					t.Errorf("a was cut off %.0fs after joining, before its login expired (%v)", time.Since(joined).Seconds(), expiration)
				}
			}
		}
		if !Pause(ctx, time.Second) {
			break
		}
	}
	l.Step("past the expiry and a sweep")
	if aCut.IsZero() {
		t.Fatalf("a, opted in, still does not need a login %.0fs after joining (expiration %v, sweep every %v)",
			time.Since(joined).Seconds(), expiration, janitorInterval)
	}
	t.Logf("a cut off %.1fs after joining; b and c: control not connected in %d polls", aCut.Sub(joined).Seconds(), notConnected)
	for _, x := range ag[1:] {
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_, err := x.WaitStatus(wctx, "up, control connected", func(st *Status) bool {
			return st.State == "up" && st.Self.Control.State == "connected"
		})
		cancel()
		Must(t, err)
	}
	if got, pings := pingSeries(ctx, b, ag[2].OverlayIP(), 5); got < 4 {
		t.Errorf("b → c past the expiry: %d of 5 pings answered:\n%s", got, pings)
	}

	// The same setting again, now that every login is older than it: it
	// counts (and warns of) only the opted-in peer.
	stdout, stderr, err = adminText(ctx, srv, "account", "update", "--login-expiration", "1m")
	Must(t, err)
	if !regexp.MustCompile(`logins expired:\s+1\n`).MatchString(stdout) || !strings.Contains(stderr, "1 opted-in peer(s)") {
		t.Errorf("account update --login-expiration 1m past every expiry: want 1 expired (only a), got:\n%s%s", stdout, stderr)
	}

	_, _, err = adminText(ctx, srv, "account", "update", "--login-expiration", "0")
	Must(t, err)
	off := time.Now()
	wctx, cancel := context.WithTimeout(ctx, loginExpiredRetry+20*time.Second)
	_, err = ag[0].WaitStatus(wctx, "up, control connected", func(st *Status) bool {
		return st.State == "up" && st.Self.Control.State == "connected"
	})
	cancel()
	Must(t, err)
	t.Logf("a back %.1fs after the expiration was turned off (the agent asks again every %v)", time.Since(off).Seconds(), loginExpiredRetry)
	connect(ctx, t, ag[0], ag[1], 30*time.Second)
	l.Step("expiration off: a back")
}
