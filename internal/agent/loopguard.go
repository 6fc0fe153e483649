package agent

import (
	"fmt"
	"net/netip"
	"slices"

	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	controlv1 "meshd/api/control/v1"
	daemonv1 "meshd/api/daemon/v1"
	"meshd/nat/peerconn"
	"meshd/wg"
)

// The loop guard: addresses where a path would run through the tunnel it
// is meant to carry. A peer's WireGuard packets sent to such an address go
// into the tunnel to a peer (often the same one), so the tunnel would
// carry itself: it loops until the path fails, eating bandwidth and CPU.
// Two kinds of address lead there:
//
//   - the overlay network, always (its route is the interface's own);
//   - the networks the mesh routes (peers' allowed IPs beyond their overlay
//     addresses), when the agent's own sockets would follow those routes:
//     without policy routing (wg.RouteInfo.Bypass false). With it, the
//     agent's sockets skip the mesh's table, so those networks are reached
//     over the underlay like any other address and must stay usable (a
//     routed 10.0.0.0/8 may hold the relay and every peer's endpoint).
//
// The guard is applied everywhere a candidate or a packet passes: the
// ICE sessions (no candidate of any type, local or remote, and no selected
// pair in it), the ICE mux (no STUN from there, so no peer-reflexive
// candidate either) and the WireGuard socket (nothing read from or sent
// there, so WireGuard does not roam into the tunnel either).

// loopPrefixes computes the guard for map m on a device that routes as ri.
func loopPrefixes(overlay netip.Prefix, ri wg.RouteInfo, peers []*controlv1.RemotePeer) []netip.Prefix {
	out := []netip.Prefix{overlay.Masked()}
	if !ri.Kernel || ri.Bypass {
		return out
	}
	for _, rp := range peers {
		for _, s := range rp.GetAllowedIps() {
			p, err := netip.ParsePrefix(s)
			if err != nil || p.Bits() == 0 || slices.Contains(ri.Skipped, p.Masked()) {
				continue // the device routes neither bad nor default prefixes, nor skipped ones
			}
			p = p.Masked()
			if overlay.Masked().Contains(p.Addr()) && p.Bits() >= overlay.Bits() {
				continue
			}
			if !slices.Contains(out, p) {
				out = append(out, p)
			}
		}
	}
	return out
}

// routeInfo is how the device routes (nothing in the kernel for a device
// that does not say).
func routeInfo(dev wg.Device) wg.RouteInfo {
	if r, ok := dev.(wg.RouteReporter); ok {
		return r.RouteInfo()
	}
	return wg.RouteInfo{}
}

// setGuard brings the loop guard in line with m, before the map's peers
// and their routes are applied.
func (t *tunnel) setGuard(m *controlv1.NetworkMap) {
	t.mu.RLock()
	dev, self, g := t.dev, t.self, t.guard
	t.mu.RUnlock()
	overlay, err := overlayPrefix(self)
	if err != nil || dev == nil || g == nil {
		return
	}
	ps := loopPrefixes(overlay, routeInfo(dev), m.GetPeers())
	if slices.Equal(ps, g.Prefixes()) {
		return
	}
	g.Set(ps)
	if gd, ok := dev.(wg.GuardDevice); ok {
		gd.SetGuard(ps)
	}
	t.log.Info("loop guard: no path may use these addresses", zap.Stringers("prefixes", ps))
}

// annotateRoutes says, for the routes this machine reaches through a
// routing peer, where their kernel routes went. It returns a new slice;
// the statuses it changes are copies.
func annotateRoutes(in []*daemonv1.RouteStatus, ri wg.RouteInfo) []*daemonv1.RouteStatus {
	st := make([]*daemonv1.RouteStatus, len(in))
	for i, rs := range in {
		st[i] = rs
		if rs.GetState() != RouteActive || rs.GetMessage() != "" {
			continue
		}
		rs = proto.Clone(rs).(*daemonv1.RouteStatus)
		st[i] = rs
		p, err := netip.ParsePrefix(rs.GetNetwork())
		switch {
		case err != nil:
		case !ri.Kernel:
			// netstack: the route exists inside the process only.
		case slices.Contains(ri.Skipped, p.Masked()):
			rs.Message = "not routed through the mesh: this machine has a route to it already"
		case ri.Bypass:
			rs.Message = fmt.Sprintf("routing table %d; the agent's own traffic bypasses it", ri.Table)
		default:
			rs.Message = "main routing table (no policy routing: " + ri.Reason + "); addresses in it must not be the server's or a peer's"
		}
	}
	return st
}

// newGuard makes the tunnel's guard over its overlay network and hands it
// to the mux and the device.
func newGuard(overlay netip.Prefix, mux *peerconn.Mux, dev wg.Device) *peerconn.Guard {
	g := peerconn.NewGuard(overlay.Masked())
	mux.SetGuard(g)
	if gd, ok := dev.(wg.GuardDevice); ok {
		gd.SetGuard(g.Prefixes())
	}
	return g
}
