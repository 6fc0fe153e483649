// Package netmap computes network maps: for each peer, the peers a policy
// connects it with, the firewall rules it enforces, its routes and its DNS
// settings. It is pure — no I/O, no clock, no locks held by callers — so
// control can compute maps from an immutable snapshot while the account
// keeps changing. Only internal/control imports it; tests and benchmarks drive it
// directly.
//
// Build turns an Input into an Index, which precomputes everything at the
// level of groups and policies (group → peers, policy → source and
// destination peers with their shared firewall-rule objects). A peer's map is
// then assembled from those pieces in time linear in the size of that map;
// no step of Build or Map is quadratic in the number of peers.
package netmap

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	controlv1 "meshd/api/control/v1"
)

// DefaultMTU is the tunnel MTU in a peer's map unless Settings says otherwise.
const DefaultMTU = 1280

// Settings are the account-wide parts of every map.
type Settings struct {
	// Domain is the account's DNS domain, e.g. "meshd.internal".
	Domain string
	// Network is the account's overlay network, e.g. 100.64.0.0/16.
	Network netip.Prefix
	// MTU of the tunnel; zero means DefaultMTU.
	MTU uint32
	// PostQuantum is the account's post-quantum mode ("off",
	// "permissive", "strict"), which every map names.
	PostQuantum string
}

// Peer is a machine of the account.
type Peer struct {
	ID    string
	Key   string // WireGuard public key, base64
	Name  string
	Label string // DNS label, unique in the account
	IP    netip.Addr
	// Groups are group ids; the All group is implicit.
	Groups       []string
	Online       bool
	LastSeen     time.Time
	LoginExpires time.Time // zero: no expiry
	// PostQuantum: the peer's agent supports post-quantum pre-shared keys.
	PostQuantum bool
}

// Group is a named set of peers. Membership is on the peer (Peer.Groups);
// an All group has every peer.
type Group struct {
	ID   string
	Name string
	All  bool
}

// Policy lets peers of Sources reach peers of Destinations (and the reverse
// when Bidirectional). Disabled policies are ignored.
type Policy struct {
	ID            string
	Enabled       bool
	Sources       []string // group ids
	Destinations  []string // group ids
	Protocol      controlv1.Protocol
	Ports         []*controlv1.PortRange // empty: all
	Bidirectional bool
}

// Route sends Network through one of Peers.
type Route struct {
	ID          string
	Network     netip.Prefix
	Peers       []string // routing peer ids, in order of preference
	Metric      int32    // lower wins between routes of one network
	Masquerade  bool
	Description string
	Enabled     bool
	Groups      []string // groups receiving the route; none: every peer
}

// NameserverGroup is a set of resolvers.
type NameserverGroup struct {
	ID           string
	Name         string
	Nameservers  []string
	MatchDomains []string
	Enabled      bool
	Groups       []string // groups using it; none: every peer
}

// Record is a custom DNS record.
type Record struct {
	Name  string
	Type  string
	Value string
	TTL   uint32
}

// Input is the state of one account that maps depend on.
type Input struct {
	Settings         Settings
	Peers            []Peer
	Groups           []Group
	Policies         []Policy
	Routes           []Route
	NameserverGroups []NameserverGroup
	Records          []Record
}

// ParseProtocol parses a policy protocol: all (or empty), tcp, udp, icmp.
func ParseProtocol(s string) (controlv1.Protocol, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "", "all":
		return controlv1.Protocol_PROTOCOL_ALL, nil
	case "tcp":
		return controlv1.Protocol_PROTOCOL_TCP, nil
	case "udp":
		return controlv1.Protocol_PROTOCOL_UDP, nil
	case "icmp":
		return controlv1.Protocol_PROTOCOL_ICMP, nil
	}
	return 0, fmt.Errorf("protocol %q: want all, tcp, udp or icmp", s)
}

// ProtocolName is the inverse of ParseProtocol.
func ProtocolName(p controlv1.Protocol) string {
	switch p {
	case controlv1.Protocol_PROTOCOL_TCP:
		return "tcp"
	case controlv1.Protocol_PROTOCOL_UDP:
		return "udp"
	case controlv1.Protocol_PROTOCOL_ICMP:
		return "icmp"
	}
	return "all"
}

// ParsePorts parses ports and port ranges ("443", "8000-8100") for a
// protocol; only tcp and udp take ports.
func ParsePorts(proto controlv1.Protocol, ports []string) ([]*controlv1.PortRange, error) {
	if len(ports) == 0 {
		return nil, nil
	}
	if proto != controlv1.Protocol_PROTOCOL_TCP && proto != controlv1.Protocol_PROTOCOL_UDP {
		return nil, fmt.Errorf("ports %s: only tcp and udp policies take ports", strings.Join(ports, ","))
	}
	out := make([]*controlv1.PortRange, 0, len(ports))
	for _, p := range ports {
		lo, hi, isRange := strings.Cut(strings.TrimSpace(p), "-")
		a, err1 := strconv.ParseUint(lo, 10, 16)
		b, err2 := a, error(nil)
		if isRange {
			b, err2 = strconv.ParseUint(hi, 10, 16)
		}
		if err1 != nil || err2 != nil || a == 0 || b < a {
			return nil, fmt.Errorf("port %q: want a port 1-65535 or a range like 8000-8100", p)
		}
		out = append(out, &controlv1.PortRange{Start: uint32(a), End: uint32(b)})
	}
	return out, nil
}
