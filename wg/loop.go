package wg

import "net/netip"

// GuardDevice is implemented by devices whose UDP socket can refuse the
// addresses that lead into the mesh itself (userspace and kernel modes):
// nothing from them is read, nothing is sent to them (wg/bind SetGuard).
// The agent passes its overlay network, and the routed networks its own
// sockets would follow into the tunnel (see RouteInfo.Bypass).
type GuardDevice interface {
	SetGuard(prefixes []netip.Prefix)
}

// RouteInfo says where a device puts the routes to its peers' allowed IPs.
type RouteInfo struct {
	// Kernel: the device installs kernel routes at all (false in
	// netstack mode, where the mesh's routes exist only inside the
	// process and the host's sockets never follow them).
	Kernel bool
	// Table is the routing table (0: main).
	Table int
	// Bypass: the agent's own sockets skip Table (policy routing with a
	// firewall mark, internal/fwmark), so a routed network never takes
	// the tunnel's own traffic into the tunnel.
	Bypass bool
	// Reason Bypass is off, when it is.
	Reason string
	// Skipped: prefixes not routed through the mesh because the machine
	// routes them already (its own LAN, usually).
	Skipped []netip.Prefix
}

// RouteReporter is implemented by every device of this package.
type RouteReporter interface {
	RouteInfo() RouteInfo
}
