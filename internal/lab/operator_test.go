//go:build linux

package lab

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os/exec"
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
