package dns

import (
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	mdns "github.com/miekg/dns"
)

// zone is a compiled Config: immutable, swapped in whole on every map.
type zone struct {
	domain string // fully qualified, lowercase; "" when the map has none
	names  map[string][]mdns.RR
	wild   []wildcard // "*.x." records, longest suffix first
	groups []route    // longest match domain first; default groups last
	dflt   []netip.AddrPort
	// overlay is the overlay network, for reverse lookups.
	overlay netip.Prefix
}

type wildcard struct {
	suffix string // ".x." (the part after "*")
	rrs    []mdns.RR
}

// route is one match domain of a nameserver group.
type route struct {
	domain  string
	servers []netip.AddrPort
}

func compile(c Config) *zone {
	z := &zone{domain: canonical(c.Domain), names: map[string][]mdns.RR{}, overlay: c.Overlay}
	for name, addrs := range c.Hosts {
		name = canonical(name)
		for _, a := range addrs {
			z.names[name] = append(z.names[name], addrRR(name, a, PeerTTL))
			if rev, err := mdns.ReverseAddr(a.String()); err == nil {
				z.names[rev] = append(z.names[rev], &mdns.PTR{Hdr: hdr(rev, mdns.TypePTR, PeerTTL), Ptr: name})
			}
		}
	}
	for _, r := range c.Records {
		for _, name := range z.recordNames(r.Name) {
			rr := recordRR(name, r)
			if rr == nil {
				continue
			}
			if strings.HasPrefix(name, "*.") {
				z.addWild(name[1:], rr)
				continue
			}
			z.names[name] = append(z.names[name], rr)
		}
	}
	slices.SortStableFunc(z.wild, func(a, b wildcard) int { return len(b.suffix) - len(a.suffix) })
	for _, g := range c.Groups {
		if len(g.MatchDomains) == 0 {
			z.dflt = append(z.dflt, g.Servers...)
			continue
		}
		for _, d := range g.MatchDomains {
			d = canonical(d)
			if i := slices.IndexFunc(z.groups, func(r route) bool { return r.domain == d }); i >= 0 {
				z.groups[i].servers = append(z.groups[i].servers, g.Servers...)
				continue
			}
			z.groups = append(z.groups, route{domain: d, servers: slices.Clone(g.Servers)})
		}
	}
	slices.SortStableFunc(z.groups, func(a, b route) int { return mdns.CountLabel(b.domain) - mdns.CountLabel(a.domain) })
	return z
}

// recordNames is where a custom record is answered (see Record).
func (z *zone) recordNames(name string) []string {
	n := canonical(name)
	if n == "" {
		return nil
	}
	if z.domain == "" || n == z.domain || mdns.IsSubDomain(z.domain, n) {
		return []string{n}
	}
	under := canonical(strings.TrimSuffix(n, ".") + "." + z.domain)
	if mdns.CountLabel(n) == 1 {
		return []string{under}
	}
	return []string{n, under}
}

func (z *zone) addWild(suffix string, rr mdns.RR) {
	for i := range z.wild {
		if z.wild[i].suffix == suffix {
			z.wild[i].rrs = append(z.wild[i].rrs, rr)
			return
		}
	}
	z.wild = append(z.wild, wildcard{suffix: suffix, rrs: []mdns.RR{rr}})
}

// lookup returns the records of name (the wildcard's, renamed, when no
// exact name exists) and whether the name exists here.
func (z *zone) lookup(name string) ([]mdns.RR, bool) {
	if rrs, ok := z.names[name]; ok {
		return rrs, true
	}
	for _, w := range z.wild {
		if strings.HasSuffix(name, w.suffix) && len(name) > len(w.suffix) {
			out := make([]mdns.RR, len(w.rrs))
			for i, rr := range w.rrs {
				out[i] = mdns.Copy(rr)
				out[i].Header().Name = name
			}
			return out, true
		}
	}
	return nil, false
}

// authoritative reports whether name is in the mesh domain (answered here,
// NXDOMAIN when unknown) rather than forwarded: true unless a nameserver
// group's match domain is a longer match.
func (z *zone) authoritative(name string) bool {
	if a, ok := reverseAddr(name); ok {
		return z.overlay.IsValid() && z.overlay.Contains(a)
	}
	if z.domain == "" || !mdns.IsSubDomain(z.domain, name) {
		return false
	}
	for _, r := range z.groups {
		if mdns.IsSubDomain(r.domain, name) && mdns.CountLabel(r.domain) > mdns.CountLabel(z.domain) {
			return false
		}
	}
	return true
}

// reverseAddr reads the address of a full reverse name
// ("2.0.64.100.in-addr.arpa.", or 32 nibbles under ip6.arpa).
func reverseAddr(name string) (netip.Addr, bool) {
	labels := mdns.SplitDomainName(name)
	switch {
	case len(labels) == 6 && strings.HasSuffix(name, ".in-addr.arpa."):
		var b [4]byte
		for i := 0; i < 4; i++ {
			n, err := strconv.ParseUint(labels[3-i], 10, 8)
			if err != nil {
				return netip.Addr{}, false
			}
			b[i] = byte(n)
		}
		return netip.AddrFrom4(b), true
	case len(labels) == 34 && strings.HasSuffix(name, ".ip6.arpa."):
		var b [16]byte
		for i := 0; i < 32; i++ {
			n, err := strconv.ParseUint(labels[31-i], 16, 8)
			if err != nil || len(labels[31-i]) != 1 {
				return netip.Addr{}, false
			}
			b[i/2] |= byte(n) << (4 * (1 - i%2))
		}
		return netip.AddrFrom16(b), true
	}
	return netip.Addr{}, false
}

// inDomain reports whether name is the mesh domain or under it.
func (z *zone) inDomain(name string) bool {
	return z.domain != "" && mdns.IsSubDomain(z.domain, name)
}

// upstreams are the servers for name: the group with the longest matching
// domain, else the default groups (nil: the system resolver).
func (z *zone) upstreams(name string) []netip.AddrPort {
	for _, r := range z.groups {
		if mdns.IsSubDomain(r.domain, name) {
			return r.servers
		}
	}
	return z.dflt
}

// soa is the SOA of the mesh domain, for negative answers.
func (z *zone) soa() mdns.RR {
	if z.domain == "" {
		return nil
	}
	return &mdns.SOA{Hdr: hdr(z.domain, mdns.TypeSOA, PeerTTL), Ns: "ns." + z.domain, Mbox: "hostmaster." + z.domain,
		Serial: 1, Refresh: 3600, Retry: 600, Expire: 86400, Minttl: PeerTTL}
}

func hdr(name string, t uint16, ttl uint32) mdns.RR_Header {
	return mdns.RR_Header{Name: name, Rrtype: t, Class: mdns.ClassINET, Ttl: ttl}
}

func addrRR(name string, a netip.Addr, ttl uint32) mdns.RR {
	if a.Is4() {
		return &mdns.A{Hdr: hdr(name, mdns.TypeA, ttl), A: net.IP(a.AsSlice())}
	}
	return &mdns.AAAA{Hdr: hdr(name, mdns.TypeAAAA, ttl), AAAA: net.IP(a.AsSlice())}
}

func recordRR(name string, r Record) mdns.RR {
	ttl := min(r.TTL, MaxRecordTTL)
	if ttl == 0 {
		ttl = 300
	}
	switch strings.ToUpper(r.Type) {
	case "A", "AAAA":
		a, err := netip.ParseAddr(strings.TrimSpace(r.Value))
		if err != nil || a.Is4() != (strings.ToUpper(r.Type) == "A") {
			return nil
		}
		return addrRR(name, a, ttl)
	case "CNAME":
		t := canonical(r.Value)
		if t == "" {
			return nil
		}
		return &mdns.CNAME{Hdr: hdr(name, mdns.TypeCNAME, ttl), Target: t}
	case "TXT":
		return &mdns.TXT{Hdr: hdr(name, mdns.TypeTXT, ttl), Txt: splitTXT(r.Value)}
	}
	return nil
}

// splitTXT cuts a value into the 255-byte strings a TXT record holds.
func splitTXT(v string) []string {
	var out []string
	for len(v) > 255 {
		out = append(out, v[:255])
		v = v[255:]
	}
	return append(out, v)
}
