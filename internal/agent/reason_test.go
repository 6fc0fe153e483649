package agent

import (
	"strings"
	"testing"
	"time"

	daemonv1 "meshd/api/daemon/v1"
	"meshd/internal/testutil"
)

func TestDirectReason(t *testing.T) {
	for _, c := range []struct {
		name          string
		dropped       bool
		local, remote []string
		stun, answer  bool
		want          string
	}{
		{"udp blocked here", false, []string{"host"}, []string{"host", "srflx"}, true, false, "UDP is blocked or filtered on this side"},
		{"nothing from the peer", false, []string{"host", "srflx"}, nil, true, true, "the peer sent no direct candidates"},
		{"peer without public address", false, []string{"host", "srflx"}, []string{"host"}, true, true, "the peer found no public address"},
		{"symmetric", false, []string{"host", "srflx"}, []string{"host", "srflx"}, true, true, "symmetric NAT"},
		{"no stun server", false, []string{"host"}, []string{"host"}, false, false, "candidates here: host; from the peer: host"},
		{"dropped", true, []string{"host", "srflx"}, []string{"srflx"}, true, true, "stopped answering"},
	} {
		if got := directReason(c.dropped, c.local, c.remote, c.stun, c.answer); !strings.Contains(got, c.want) {
			t.Errorf("%s: %q, want it to say %q", c.name, got, c.want)
		}
	}
	if k := candidateKind("candidate:1 1 udp 2130706431 192.168.1.2 51820 typ host generation 0"); k != "host" {
		t.Errorf("candidateKind: %q", k)
	}
	// A peer writes the line: only the four ICE kinds reach status.
	for _, sdp := range []string{"candidate:1 1 udp 1 10.0.0.1 1 typ \x1b]0;pwn\x07", "typ " + strings.Repeat("x", 1<<16), "no kind here"} {
		if k := candidateKind(sdp); k != "" {
			t.Errorf("candidateKind(%.40q) = %.40q, want nothing", sdp, k)
		}
	}
}

// TestStatusSaysWhyRelayed: a peer whose UDP gets nowhere is relayed, and
// status says why on both sides (here: no STUN answer on the blocked one).
func TestStatusSaysWhyRelayed(t *testing.T) {
	h := newHarness(t)
	h.hub.setRelays(turnServer(t))
	a := h.start("", "SETUP", true) // nothing direct gets out of a
	b := h.start("", "SETUP", false)
	var pa, pb *daemonv1.PeerStatus
	testutil.WaitFor(t, 20*time.Second, "a reason on both sides", func() bool {
		pa, pb = peerStatus(a, b), peerStatus(b, a)
		return pa.GetReason() != "" && pb.GetReason() != ""
	})
	if !strings.Contains(pa.GetReason(), "gets no answer from here") {
		t.Errorf("blocked side says %q, want it to say UDP gets no answer from here", pa.GetReason())
	}
	t.Logf("a: %s\nb: %s", pa.GetReason(), pb.GetReason())
}

func peerStatus(n, of *node) *daemonv1.PeerStatus {
	for _, p := range n.e.Status().GetPeers() {
		if p.GetPublicKey() == of.key().String() {
			return p
		}
	}
	return nil
}

// TestRouteUnreachableWhilePeerOffline: a route through a peer that is
// offline or has no tunnel is "unreachable" with the reason, not "active";
// the services' own copy is left alone.
func TestRouteUnreachableWhilePeerOffline(t *testing.T) {
	orig := []*daemonv1.RouteStatus{
		{Network: "10.1.0.0/24", Via: "up", ViaPublicKey: "K1", State: RouteActive},
		{Network: "10.2.0.0/24", Via: "off", ViaPublicKey: "K2", State: RouteActive},
		{Network: "10.3.0.0/24", Via: "slow", ViaPublicKey: "K3", State: RouteActive},
		{Network: "10.4.0.0/24", Via: "gone", ViaPublicKey: "K4", State: RouteActive},
		{Network: "10.5.0.0/24", State: RouteServing},
	}
	routes := append([]*daemonv1.RouteStatus(nil), orig...)
	markUnreachableRoutes(routes, []*daemonv1.PeerStatus{
		{Name: "up", PublicKey: "K1", State: PeerConnected},
		{Name: "off", PublicKey: "K2", State: PeerIdle},
		{Name: "slow", PublicKey: "K3", State: PeerConnecting},
	})
	want := []struct{ state, msg string }{
		{RouteActive, ""}, {RouteUnreachable, "offline"}, {RouteUnreachable, "connecting"}, {RouteUnreachable, "not in this machine's map"}, {RouteServing, ""},
	}
	for i, w := range want {
		if routes[i].GetState() != w.state || !strings.Contains(routes[i].GetMessage(), w.msg) {
			t.Errorf("%s: %s %q, want %s %q", routes[i].GetNetwork(), routes[i].GetState(), routes[i].GetMessage(), w.state, w.msg)
		}
	}
	for _, r := range orig[:4] {
		if r.GetState() != RouteActive {
			t.Errorf("the services' route %s was changed to %s", r.GetNetwork(), r.GetState())
		}
	}
}

// TestRelayedLatencyInStatus: a peer relayed over TURN/UDP shows its
// latency through the relay.
func TestRelayedLatencyInStatus(t *testing.T) {
	h := newHarness(t)
	relays := turnServer(t)
	relays[0].Urls = relays[0].Urls[:1] // TURN over UDP only: what the latency is measured on
	h.hub.setRelays(relays)
	a := h.start("", "SETUP", true) // nothing direct gets out of a
	b := h.start("", "SETUP", false)
	testutil.WaitFor(t, 20*time.Second, "a relayed latency", func() bool {
		p := peerStatus(a, b)
		return p.GetLocalCandidate().GetType() == "relay" && p.GetLatencyMs() > 0
	})
}
