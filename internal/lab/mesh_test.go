//go:build linux

package lab

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// The end-to-end tests in this file and in matrix_test.go run the real
// meshd binary: `meshd all` on a public host, `meshd agent` on hosts behind
// the routers.

// startMesh builds nothing but starts the mesh: `meshd all` on a new public
// host "srv" and an agent on every host; it waits until each agent has
// every other one in its status.
func startMesh(ctx context.Context, t *testing.T, l *Lab, hosts ...*Host) (*Server, []*Agent) {
	t.Helper()
	if testing.Short() {
		t.Skip("lab: end-to-end with the meshd binary; skipped with -short")
	}
	Binary(t)
	l.Step("meshd binary ready")
	srv := StartServer(ctx, t, l.Host("srv", nil))
	l.Step("meshd all started")
	agents := StartAgents(ctx, t, srv.Join, hosts...)
	l.Step(fmt.Sprintf("%d agents joined", len(agents)))
	waitPeers(ctx, t, agents, 30*time.Second)
	l.Step("every agent lists every peer")
	return srv, agents
}

// waitPeers waits until every agent's status lists every other agent.
func waitPeers(ctx context.Context, t *testing.T, agents []*Agent, timeout time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for _, a := range agents {
		_, err := a.WaitStatus(ctx, "full peer list", func(st *Status) bool {
			for _, b := range agents {
				if b != a && st.Peer(b.OverlayIP()) == nil {
					return false
				}
			}
			return true
		})
		Must(t, err)
	}
}

// connect waits until a pings b through the tunnel and returns how long
// that took.
func connect(ctx context.Context, t *testing.T, a, b *Agent, timeout time.Duration) time.Duration {
	t.Helper()
	d, err := a.Host.WaitPing(ctx, b.OverlayIP(), timeout)
	if err != nil {
		t.Fatalf("%s → %s through the tunnel: %v", a.Host.Name(), b.Host.Name(), err)
	}
	return d
}

// peerOf is a's view of b, or nil.
func peerOf(ctx context.Context, a, b *Agent) (*PeerStatus, error) {
	st, err := a.Status(ctx)
	if err != nil {
		return nil, err
	}
	return st.Peer(b.OverlayIP()), nil
}

// waitPath waits until a's view of b is connected on the given path.
func waitPath(ctx context.Context, t *testing.T, a, b *Agent, path string, timeout time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	_, err := a.WaitStatus(ctx, fmt.Sprintf("%s path to %s", path, b.Host.Name()), func(st *Status) bool {
		p := st.Peer(b.OverlayIP())
		return p != nil && p.State == "connected" && p.Path == path
	})
	if err != nil {
		t.Fatal(err)
	}
	return time.Since(start)
}

// pingSeries sends count pings 0.2 s apart from h and returns how many
// were answered.
func pingSeries(ctx context.Context, h *Host, addr netip.Addr, count int) (int, string) {
	out, _ := h.Run(ctx, "ping", "-n", "-q", "-c", fmt.Sprint(count), "-i", "0.2", "-W", "1", addr.String())
	var sent, got int
	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(line, "packets transmitted") {
			fmt.Sscanf(strings.TrimSpace(line), "%d packets transmitted, %d received", &sent, &got)
		}
	}
	return got, strings.TrimSpace(out)
}

// waitNoPing waits until a ping from h to addr fails and returns how long
// that took; it fails t when every ping answers until timeout.
func waitNoPing(ctx context.Context, t *testing.T, h *Host, addr netip.Addr, timeout time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for i := 0; i < 10000; i++ {
		if err := h.Ping(ctx, addr); err != nil && ctx.Err() == nil {
			return time.Since(start)
		}
		if !Pause(ctx, 100*time.Millisecond) {
			break
		}
	}
	t.Fatalf("%s still reaches %s %v later", h.Name(), addr, timeout)
	return 0
}
