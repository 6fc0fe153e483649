package relay

import (
	"net"
	"net/netip"
	"sync"
	"time"

	"go.uber.org/zap"
)

// The peer policy: where an allocation may send. A TURN relay with valid
// credentials is otherwise a door from the internet into the relay's host
// and the networks behind it, so by default it refuses, as coturn's
// --no-loopback-peers and its recommended --denied-peer-ip list do:
//
//   - the relay host's own addresses (every interface address), and on its
//     public address every port that is not one of its own live relayed
//     addresses: two relayed peers meet relay address to relay address,
//     nothing else on the host is a peer;
//   - loopback, unspecified, private (10/8, 172.16/12, 192.168/16), shared
//     (CGNAT, 100.64/10), link-local (with the cloud metadata address),
//     multicast, reserved and broadcast;
//   - every IPv6 address (relayed addresses are IPv4 only), which covers
//     ULA, link-local, loopback and NAT64 forms; IPv4-mapped IPv6 is judged
//     as the IPv4 address it carries.
//
// Documentation ranges (TEST-NET) stay allowed: labs use them as their
// internet. An operator of a private deployment, whose peers do live in
// private ranges, opens them with Options.AllowPeers (--relay-allow-peer);
// the host's own addresses stay closed whatever the allow list says.

// builtinDeny are the IPv4 ranges refused unless allowed.
var builtinDeny = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),      // "this network", unspecified
	netip.MustParsePrefix("10.0.0.0/8"),     // private
	netip.MustParsePrefix("100.64.0.0/10"),  // shared address space (CGNAT)
	netip.MustParsePrefix("127.0.0.0/8"),    // loopback
	netip.MustParsePrefix("169.254.0.0/16"), // link-local, cloud metadata
	netip.MustParsePrefix("172.16.0.0/12"),  // private
	netip.MustParsePrefix("192.168.0.0/16"), // private
	netip.MustParsePrefix("224.0.0.0/4"),    // multicast
	netip.MustParsePrefix("240.0.0.0/4"),    // reserved, broadcast
}

// localAddrsTTL bounds how stale the list of the host's addresses may be
// (an interface may gain an address after start).
const localAddrsTTL = 30 * time.Second

// peerPolicy decides which peer addresses allocations may reach.
type peerPolicy struct {
	public netip.Addr
	allow  []netip.Prefix
	deny   []netip.Prefix

	mu      sync.Mutex
	local   map[netip.Addr]bool
	localAt time.Time
	addrs   func() ([]net.Addr, error) // net.InterfaceAddrs; tests replace it
}

func newPeerPolicy(public netip.Addr, allow, extraDeny []netip.Prefix) *peerPolicy {
	deny := append(append([]netip.Prefix(nil), builtinDeny...), extraDeny...)
	return &peerPolicy{public: public, allow: allow, deny: deny, addrs: net.InterfaceAddrs}
}

// check reports whether an allocation may be given a permission for ip,
// and if not, by which rule. The relay's public address passes here; its
// ports are checked per packet (see Server.ownAddr).
func (p *peerPolicy) check(ip netip.Addr) (ok bool, rule string) {
	if !ip.IsValid() {
		return false, "invalid"
	}
	ip = ip.Unmap()
	if !ip.Is4() {
		return false, "ipv6"
	}
	if ip == p.public {
		return true, ""
	}
	if p.isLocal(ip) {
		return false, "relay host address"
	}
	for _, a := range p.allow {
		if a.Contains(ip) {
			return true, ""
		}
	}
	for _, d := range p.deny {
		if d.Contains(ip) {
			return false, d.String()
		}
	}
	return true, ""
}

// isLocal reports whether ip is an address of one of the host's
// interfaces. Without the list (an error) it answers true for nothing:
// the range rules still hold.
func (p *peerPolicy) isLocal(ip netip.Addr) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.local == nil || time.Since(p.localAt) > localAddrsTTL {
		p.localAt = time.Now()
		addrs, _ := p.addrs()
		p.local = make(map[netip.Addr]bool, len(addrs))
		for _, a := range addrs {
			if pfx, err := netip.ParsePrefix(a.String()); err == nil {
				p.local[pfx.Addr().Unmap()] = true
			}
		}
	}
	return p.local[ip]
}

// permit is the check behind pion's PermissionHandler (see front.permit):
// a refused peer gets 403 Forbidden.
func (s *Server) permit(client net.Addr, peer net.IP) bool {
	ip, _ := netip.AddrFromSlice(peer)
	ok, rule := s.policy.check(ip)
	if !ok {
		s.m.peerDenied.Add(1)
		s.log.Debug("peer denied", zap.Stringer("client", client), zap.Stringer("peer", ip), zap.String("rule", rule))
	}
	return ok
}

// ownAddr reports whether dst is on the relay's public address, where the
// only peers are the relay's own live relayed addresses (localRelay).
func (s *Server) ownAddr(dst netip.AddrPort) bool {
	return dst.Addr().Unmap() == s.opts.PublicIP
}
