// Package dns is the agent's resolver for the mesh (the "DNS" part of a
// network map, applied the way NetBird and Tailscale users expect): it
// answers A/AAAA (and PTR) for the peers' names (`laptop.meshd.internal`)
// and the account's custom records, forwards every other query to the map's
// nameserver groups by match domain (the longest match wins; a group without
// match domains is the default), and falls back to the system's resolver
// when no group applies or the group's servers fail. It answers only
// clients inside the overlay network (and loopback): it is never an open
// resolver, even when a packet from elsewhere reaches its address.
//
// OS integration (os_linux.go): with systemd-resolved, the agent's
// interface gets this resolver as its DNS server for the mesh domain only
// (`resolvectl dns IFACE IP; resolvectl domain IFACE ~DOMAIN`), undone on
// exit; without it, /etc/resolv.conf is left alone and one log line says
// how to query the resolver directly.
//
// Only internal/agent and roles/agent import it: one Server per tunnel, fed
// a Config built by FromMap from every network map.
//
// The DNS library is github.com/miekg/dns v1: its API has been stable for
// years and CoreDNS and NetBird build on it. codeberg.org/miekg/dns is the
// same author's v2 rewrite, still at v0.x (v0.6.0 here) with an API that
// keeps changing; v1 still gets fixes. Moving later is contained in this
// package.
package dns

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	mdns "github.com/miekg/dns"

	controlv1 "meshd/api/control/v1"
)

// PeerTTL is the TTL of the answers for peer names.
const PeerTTL = 60

// MaxRecordTTL caps the TTL of custom records (control refuses more): a
// wrong record must not stay in clients' caches for longer than a day.
const MaxRecordTTL = 86400

// Config is what the resolver serves: the mesh's names and where other
// names go. Build it from a network map with FromMap.
type Config struct {
	// Domain is the mesh domain ("meshd.internal"); every name under it is
	// answered here (NXDOMAIN when unknown), never forwarded.
	Domain string
	// Hosts maps peer names (fully qualified, e.g. "laptop.meshd.internal")
	// to their overlay addresses.
	Hosts map[string][]netip.Addr
	// Records are the account's custom records.
	Records []Record
	// Groups are the nameserver groups, in the map's order.
	Groups []Group
	// Overlay is the overlay network: reverse lookups of its addresses are
	// answered here (NXDOMAIN for an address no peer has).
	Overlay netip.Prefix
}

// Record is a custom record. A single-label name ("nas") lives under the
// mesh domain; a name with dots that does not end in the domain
// ("nas.home.arpa") is answered both as written and under the domain.
type Record struct {
	Name  string
	Type  string // A, AAAA, CNAME, TXT
	Value string
	TTL   uint32
}

// Group is a nameserver group: queries for MatchDomains (and their
// subdomains) go to Servers, in order. No MatchDomains: every domain.
type Group struct {
	Name         string
	Servers      []netip.AddrPort
	MatchDomains []string
}

// FromMap builds the resolver's configuration from a network map: the
// self peer and every remote peer by DNS name, the custom records and the
// nameserver groups. Entries it cannot read are skipped and reported in
// the error; the rest still applies.
func FromMap(m *controlv1.NetworkMap) (Config, error) {
	var errs []string
	d := m.GetDns()
	c := Config{Domain: canonical(d.GetDomain()), Hosts: map[string][]netip.Addr{}}
	add := func(name, ip string) {
		if name == "" || ip == "" {
			return
		}
		a, err := netip.ParseAddr(strings.Split(ip, "/")[0])
		if err != nil {
			errs = append(errs, fmt.Sprintf("peer %s: overlay ip %q", name, ip))
			return
		}
		n := canonical(name)
		if !slices.Contains(c.Hosts[n], a.Unmap()) {
			c.Hosts[n] = append(c.Hosts[n], a.Unmap())
		}
	}
	if p, err := netip.ParsePrefix(m.GetSelf().GetOverlayNetwork()); err == nil {
		c.Overlay = p.Masked()
	}
	add(m.GetSelf().GetDnsName(), m.GetSelf().GetOverlayIp())
	for _, p := range m.GetPeers() {
		add(p.GetDnsName(), p.GetOverlayIp())
	}
	for _, r := range d.GetRecords() {
		c.Records = append(c.Records, Record{Name: r.GetName(), Type: strings.ToUpper(r.GetType()), Value: r.GetValue(), TTL: r.GetTtl()})
	}
	for _, g := range d.GetNameserverGroups() {
		grp := Group{Name: g.GetName()}
		for _, s := range g.GetNameservers() {
			ap, err := ParseServer(s)
			if err != nil {
				errs = append(errs, fmt.Sprintf("nameserver group %s: %v", g.GetName(), err))
				continue
			}
			grp.Servers = append(grp.Servers, ap)
		}
		for _, md := range g.GetMatchDomains() {
			if md = canonical(md); md != "" {
				grp.MatchDomains = append(grp.MatchDomains, md)
			}
		}
		if len(grp.Servers) > 0 {
			c.Groups = append(c.Groups, grp)
		}
	}
	if len(errs) > 0 {
		return c, fmt.Errorf("dns: map: %s", strings.Join(errs, "; "))
	}
	return c, nil
}

// ParseServer reads a nameserver: "ip" (port 53) or "ip:port" ("[v6]:port").
func ParseServer(s string) (netip.AddrPort, error) {
	s = strings.TrimSpace(s)
	if a, err := netip.ParseAddr(s); err == nil {
		return netip.AddrPortFrom(a.Unmap(), 53), nil
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("nameserver %q: want an IP or IP:port", s)
	}
	a, err := netip.ParseAddr(host)
	p, perr := strconv.ParseUint(port, 10, 16)
	if err != nil || perr != nil || p == 0 {
		return netip.AddrPort{}, fmt.Errorf("nameserver %q: want an IP or IP:port", s)
	}
	return netip.AddrPortFrom(a.Unmap(), uint16(p)), nil
}

// canonical lowercases a name and makes it fully qualified ("" stays "").
func canonical(name string) string {
	name = strings.ToLower(strings.TrimSpace(name))
	if name == "" || name == "." {
		return ""
	}
	return mdns.Fqdn(name)
}
