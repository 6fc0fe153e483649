// Package fwmark keeps the agent's own traffic on the underlay. The mesh's
// routes (networks behind routing peers) live in a routing table of their
// own, which an `ip rule` consults for every packet except those that carry
// Mark; every socket the agent opens towards control, signal, relays and
// peers (the WireGuard/ICE socket, TURN sockets, control and signal
// connections) carries Mark. So a route that covers the server's or a
// peer's address never pulls the tunnel's own packets into the tunnel.
//
// Only Linux has SO_MARK; elsewhere the functions do nothing (and the
// agent installs no kernel routes there). Marking needs CAP_NET_ADMIN:
// without it, which is when the agent runs without a TUN (netstack) and
// installs no routes either, sockets stay unmarked and nothing is lost.
//
// Any package may import it; it imports nothing of meshd.
package fwmark

// Mark is the firewall mark on the agent's own sockets. It is matched
// with Mask, so other software's marks in the other bits do not interfere.
const (
	Mark uint32 = 0x00510000
	Mask uint32 = 0x00ff0000
)

// Table is the routing table the mesh's routes go into, and RulePriority
// the priority of the `ip rule` that sends unmarked packets to it (before
// the main table at 32766; after the local table at 0).
const (
	Table        = 51820
	RulePriority = 5182
)
