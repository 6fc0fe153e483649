package agent

import (
	"google.golang.org/protobuf/proto"

	daemonv1 "meshd/api/daemon/v1"
)

// RouteUnreachable is the state of a route whose routing peer this machine
// has no working tunnel to: the map still lists the route, but packets for
// it go nowhere.
const RouteUnreachable = "unreachable"

// markUnreachableRoutes turns "active" routes whose routing peer is not
// connected into "unreachable", saying why: a route is only as good as the
// tunnel to the peer that routes it. It changes copies: the services keep
// the originals.
func markUnreachableRoutes(routes []*daemonv1.RouteStatus, peers []*daemonv1.PeerStatus) {
	byKey := make(map[string]*daemonv1.PeerStatus, len(peers))
	for _, p := range peers {
		byKey[p.GetPublicKey()] = p
	}
	for i, r := range routes {
		if r.GetState() != RouteActive {
			continue
		}
		p := byKey[r.GetViaPublicKey()]
		if p.GetState() == PeerConnected {
			continue
		}
		r = proto.CloneOf(r)
		routes[i] = r
		switch {
		case p == nil:
			r.State, r.Message = RouteUnreachable, "the routing peer is not in this machine's map (the policy may not let it reach it)"
		case p.GetState() == PeerIdle:
			r.State, r.Message = RouteUnreachable, "the routing peer "+p.GetName()+" is offline"
		case p.GetState() != PeerConnected:
			r.State, r.Message = RouteUnreachable, "no tunnel to the routing peer "+p.GetName()+" yet (connecting)"
		}
	}
}
