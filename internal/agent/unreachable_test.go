package agent

import (
	"strings"
	"testing"
	"time"

	daemonv1 "meshd/api/daemon/v1"
	"meshd/internal/testutil"
	"meshd/wg/wgtest"
)

// When signal refuses messages to a peer and says why (its ticket from
// control expired, say), status shows that reason on the peer until a
// message goes through.
func TestStatusSaysWhyPeerIsUnreachable(t *testing.T) {
	h := newHarness(t)
	const why = "; signal refused its registration: seal: ticket expired at 2030-01-01T00:00:00Z"
	h.bus.mu.Lock()
	h.bus.down, h.bus.why = true, why
	h.bus.mu.Unlock()
	a := h.start("", "SETUP", false)
	b := h.start("", "SETUP", false)
	peerOf := func(n *node, other *node) *daemonv1.PeerStatus {
		for _, p := range n.e.Status().Peers {
			if p.PublicKey == other.key().String() {
				return p
			}
		}
		return nil
	}
	// Either side may be the one that sends first; each learns why the
	// other is unreachable once it tries.
	testutil.WaitFor(t, 10*time.Second, "a reason on a peer", func() bool {
		pa, pb := peerOf(a, b), peerOf(b, a)
		return (pa != nil && strings.Contains(pa.GetReason(), "ticket expired")) ||
			(pb != nil && strings.Contains(pb.GetReason(), "ticket expired"))
	})

	h.bus.mu.Lock()
	h.bus.down = false
	h.bus.mu.Unlock()
	testutil.WaitFor(t, 10*time.Second, "direct paths both ways", func() bool {
		return a.pathTo(b.key()) == wgtest.PathDirect && b.pathTo(a.key()) == wgtest.PathDirect
	})
	a.dev().Handshake(b.key(), time.Now())
	testutil.WaitFor(t, 5*time.Second, "a's peer connected without a reason", func() bool {
		p := peerOf(a, b)
		return p != nil && p.State == PeerConnected && p.GetReason() == ""
	})
}
