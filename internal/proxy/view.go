package proxy

import (
	"fmt"
	"net/netip"
	"strings"

	controlv1 "meshd/api/control/v1"
	"meshd/internal/filter"
)

// View is what one network map lets the proxies reach: the peers' names and
// overlay addresses, the routes through other peers, and the firewall
// rules. It is immutable; the agent makes a new one for every map.
type View struct {
	self   netip.Addr
	names  map[string]netip.Addr // full mesh names and bare names, lower case
	peers  map[netip.Addr]bool   // overlay addresses of the map's peers
	routes []netip.Prefix        // networks other peers route
	rules  *filter.Rules         // nil: accept everything
}

// NewView reads m; rules are the map's compiled firewall rules (nil: none).
func NewView(m *controlv1.NetworkMap, rules *filter.Rules) *View {
	v := &View{names: map[string]netip.Addr{}, peers: map[netip.Addr]bool{}, rules: rules}
	domain := canonical(m.GetDns().GetDomain())
	add := func(dnsName, ip string) (netip.Addr, bool) {
		a, err := netip.ParseAddr(strings.Split(ip, "/")[0])
		if err != nil {
			return netip.Addr{}, false
		}
		a = a.Unmap()
		if n := canonical(dnsName); n != "" {
			v.names[n] = a
			if bare, ok := strings.CutSuffix(n, "."+domain); ok && domain != "" && !strings.Contains(bare, ".") {
				v.names[bare] = a
			}
		}
		return a, true
	}
	self := m.GetSelf()
	v.self, _ = add(self.GetDnsName(), self.GetOverlayIp())
	for _, p := range m.GetPeers() {
		if a, ok := add(p.GetDnsName(), p.GetOverlayIp()); ok {
			v.peers[a] = true
		}
	}
	inMap := map[string]bool{}
	for _, p := range m.GetPeers() {
		inMap[p.GetPublicKey()] = true
	}
	for _, r := range m.GetRoutes() {
		if !inMap[r.GetPeerPublicKey()] || r.GetPeerPublicKey() == self.GetPublicKey() {
			continue // served here (netstack cannot) or through no known peer
		}
		if p, err := netip.ParsePrefix(r.GetNetwork()); err == nil && p.Bits() > 0 {
			v.routes = append(v.routes, p.Masked())
		}
	}
	return v
}

// canonical is a name in lower case without the trailing dot.
func canonical(s string) string {
	return strings.ToLower(strings.TrimSuffix(strings.TrimSpace(s), "."))
}

// Resolve returns the address host stands for when this peer may open a
// TCP connection to it at port: an overlay address of a peer in the map
// (or this peer's own), or an address in a route another peer serves, and
// the firewall rules let the connection start. host is an IP address, a
// mesh name (name.domain) or a bare name; names come from the map only.
func (v *View) Resolve(host string, port uint16) (netip.Addr, error) {
	return v.resolve(host, filter.ProtoTCP, port)
}

// ResolveUDP is Resolve for UDP datagrams to port.
func (v *View) ResolveUDP(host string, port uint16) (netip.Addr, error) {
	return v.resolve(host, filter.ProtoUDP, port)
}

func (v *View) resolve(host string, proto uint8, port uint16) (netip.Addr, error) {
	if v == nil {
		return netip.Addr{}, ErrDown
	}
	a, err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(host, "["), "]"))
	if err != nil {
		var ok bool
		if a, ok = v.names[canonical(host)]; !ok {
			return netip.Addr{}, fmt.Errorf("%w: %q (a peer's name.domain, its bare name, or an overlay address)", ErrNoSuchName, clean(host))
		}
	}
	a = a.Unmap()
	if a == v.self {
		return a, nil // this peer's own forwards
	}
	if !v.peers[a] && !v.routed(a) {
		return netip.Addr{}, fmt.Errorf("%w: %s is not in the mesh", ErrNotAllowed, a)
	}
	if !v.rules.Starts(false, a, proto, port) {
		name := "TCP"
		if proto == filter.ProtoUDP {
			name = "UDP"
		}
		return netip.Addr{}, fmt.Errorf("%w: the policies do not let this peer reach %s port %d over %s", ErrNotAllowed, a, port, name)
	}
	return a, nil
}

func (v *View) routed(a netip.Addr) bool {
	for _, p := range v.routes {
		if p.Contains(a) {
			return true
		}
	}
	return false
}
