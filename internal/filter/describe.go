package filter

import (
	"cmp"
	"net/netip"
	"slices"
)

// Protocol numbers a Spec names (IANA).
const (
	ProtoAny  uint8 = 0
	ProtoICMP uint8 = protoICMP // matches ICMPv6 too
	ProtoTCP  uint8 = protoTCP
	ProtoUDP  uint8 = protoUDP
)

// Spec describes one compiled rule, for an enforcer that does not run
// Filter.Allow: kernel WireGuard's packets never reach this process, so
// internal/filter/nftfilter renders the same compiled Rules as nftables
// rules on the interface. Deriving both from one Rules keeps them from
// drifting: a change in how a FirewallRule compiles changes both.
//
// A packet matches a Spec when all of these hold:
//   - its direction is the Spec's: Inbound (out of the tunnel, from a peer)
//     or not (into the tunnel, to a peer);
//   - the address on the far side (the source of an inbound packet, the
//     destination of an outbound one) is in Peer;
//   - Proto is ProtoAny, or the packet's protocol; ProtoICMP matches ICMPv6
//     as well;
//   - Ports is empty, or the packet is TCP or UDP (with ProtoAny either of
//     them) and its destination port is in one of the ranges.
//
// An ICMP echo reply never matches a Spec: it passes only as the reply to a
// request that passed. Everything else that matches no Spec passes only when
// it belongs to a flow that passed (a reply, or a later packet of it).
type Spec struct {
	Inbound bool
	// Peer is the peer's address (a /32 or /128) or a network it stands
	// for (a routed network, or a prefix the map names).
	Peer  netip.Prefix
	Proto uint8
	Ports []PortRange
}

// PortRange is an inclusive range of destination ports.
type PortRange struct{ Lo, Hi uint16 }

// AllowAll reports whether the rules accept everything (the map had no
// firewall rules, or r is nil). A map whose rules all failed to compile
// does not accept everything: it has no Specs and drops what no flow
// explains.
func (r *Rules) AllowAll() bool { return r == nil || r.allowAll }

// Specs describes the compiled rules: inbound ones first, then outbound;
// within a direction, by peer (addresses, then networks, in address
// order), each peer's rules in the order of the map. Empty when AllowAll.
// The slices are fresh: the caller may keep or change them.
func (r *Rules) Specs() []Spec {
	if r.AllowAll() {
		return nil
	}
	out := make([]Spec, 0, r.n)
	for _, inbound := range []bool{true, false} {
		rs := &r.out
		if inbound {
			rs = &r.in
		}
		addrs := make([]netip.Addr, 0, len(rs.byAddr))
		for a := range rs.byAddr {
			addrs = append(addrs, a)
		}
		slices.SortFunc(addrs, netip.Addr.Compare)
		for _, a := range addrs {
			for _, cr := range rs.byAddr[a] {
				out = append(out, cr.spec(inbound, netip.PrefixFrom(a, a.BitLen())))
			}
		}
		prefixes := slices.Clone(rs.prefixes)
		slices.SortStableFunc(prefixes, func(x, y prefixRules) int {
			if c := x.p.Addr().Compare(y.p.Addr()); c != 0 {
				return c
			}
			return cmp.Compare(x.p.Bits(), y.p.Bits())
		})
		for _, pr := range prefixes {
			for _, cr := range pr.rules {
				out = append(out, cr.spec(inbound, pr.p))
			}
		}
	}
	return out
}

func (cr *rule) spec(inbound bool, peer netip.Prefix) Spec {
	s := Spec{Inbound: inbound, Peer: peer, Proto: cr.proto}
	for _, p := range cr.ports {
		s.Ports = append(s.Ports, PortRange{Lo: p.lo, Hi: p.hi})
	}
	return s
}

// Rules returns the rules the filter applies now (never nil).
func (f *Filter) Rules() *Rules { return f.rules.Load() }

// Starts reports whether the rules let a new flow start with its first
// packet: to peer (or from it, when inbound), with protocol proto to
// destination port. A proxy asks it before it dials, so that a
// destination the policies deny is refused at once instead of timing out
// on packets the filter drops.
func (r *Rules) Starts(inbound bool, peer netip.Addr, proto uint8, port uint16) bool {
	if r.AllowAll() {
		return true
	}
	rs := &r.out
	if inbound {
		rs = &r.in
	}
	return rs.match(peer.Unmap(), proto, port, true)
}
