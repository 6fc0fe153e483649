// Package nftfilter enforces the firewall rules of a network map with
// nftables on the WireGuard interface, for kernel WireGuard: its packets
// pass between the kernel's crypto and the network stack without ever
// reaching the agent, so internal/filter's Filter (which the userspace and
// netstack data planes call per packet) cannot see them. Only wg (its
// kernel device) imports it.
//
// The policy is the one internal/filter enforces, rendered from the same
// compiled filter.Rules (filter.Rules.Specs), so the two cannot drift:
// a packet from the interface is accepted when conntrack knows its flow
// (ct state established,related) or an inbound Spec for its source matches,
// else dropped; a packet to the interface likewise with the outbound Specs
// and its destination; rules that compiled to AllowAll accept everything.
// One table per interface, "inet meshd-filter-<iface>", replaced atomically
// (one netlink batch) on every Apply and deleted by Close:
//
//	table inet meshd-filter-wg0 {
//		chain input   { type filter hook input priority filter; policy accept;   iifname "wg0" jump from_peers }
//		chain forward { type filter hook forward priority filter; policy accept; iifname "wg0" jump from_peers; oifname "wg0" jump to_peers }
//		chain output  { type filter hook output priority filter; policy accept;  oifname "wg0" jump to_peers }
//		chain from_peers { ct state established,related return; <echo replies> drop; <inbound specs> return; counter drop }
//		chain to_peers   { ct state established,related return; <echo replies> drop; <outbound specs> return; counter drop }
//	}
//
// Peers whose Specs have the same shape (direction, protocol, port range)
// share one rule that looks their addresses up in a set (`ip saddr @in4_0
// tcp dport 22 return`), so a map of thousands of peers is a table of a
// few rules, a new flow costs a few lookups, and a change is one batch
// (about 0.1 s for 5000 peers, BenchmarkApply). Networks (routed
// prefixes) get a rule each.
//
// The differences from internal/filter, all at the edges: conntrack also
// accepts ICMP errors related to a known flow (internal/filter judges them
// by the rules); conntrack reassembles fragments and walks IPv6 extension
// headers before the rules see a packet; a flow lives as long as conntrack
// keeps it rather than filter.TCPTimeout and friends; and an ICMP Spec
// matches ICMP from IPv4 peers and ICMPv6 from IPv6 peers (not the other way
// round, which no real packet does).
//
// Rendering (this file) is plain data and text, tested without root; the
// netlink side is nft_linux.go.
package nftfilter

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"meshd/internal/filter"
)

// ErrUnsupported is returned where nftables does not exist (every platform
// but Linux).
var ErrUnsupported = errors.New("nftfilter: nftables is Linux only")

// TablePrefix starts the name of every table this package makes.
const TablePrefix = "meshd-filter-"

// TableName is the name of iface's table (family inet).
func TableName(iface string) string { return TablePrefix + iface }

// Chain names.
const (
	chainInput   = "input"
	chainForward = "forward"
	chainOutput  = "output"
	chainFrom    = "from_peers"
	chainTo      = "to_peers"
)

// Protocol numbers the rendering uses besides filter's.
const (
	protoICMPv6  = 58
	icmpEchoRepl = 0
	icmp6EchoRep = 129
)

// line is one nftables rule: its matches in the order they are evaluated,
// then the verdict. The same value becomes text (String, for tests and
// logs) and netlink expressions (nft_linux.go).
type line struct {
	chain string
	// iif, oif: the input or output interface name must be this.
	iif, oif string
	// established: ct state established,related.
	established bool
	// src or dst: the network-layer source or destination is in this
	// prefix (which also fixes the IP version).
	src, dst netip.Prefix
	// srcSet or dstSet: the source or destination address is in this set
	// of the table (of IPv6 addresses when set6, else IPv4).
	srcSet, dstSet string
	set6           bool
	// proto: the transport protocol (meta l4proto) must be this, when
	// hasProto.
	proto    uint8
	hasProto bool
	// icmpType: the first byte of the transport header must be this
	// (with hasProto and proto ICMP or ICMPv6), when hasType.
	icmpType uint8
	hasType  bool
	// ports: the destination port is in this range, when hasPorts (with
	// hasProto and proto TCP or UDP).
	ports    filter.PortRange
	hasPorts bool
	counter  bool
	verdict  string // "return", "drop" or "jump <chain>"
}

// chainDef is one chain of the table; base chains have a hook.
type chainDef struct {
	name  string
	hook  string // "input", "forward", "output"; "" for a regular chain
	lines []line
}

// setDef is a named set of addresses in the table.
type setDef struct {
	name  string
	v6    bool
	elems []netip.Addr // sorted, no duplicates
}

// plan is the table Apply installs for one interface and one rule set.
type plan struct {
	table  string
	sets   []setDef
	chains []chainDef
}

// render turns compiled rules into the table for iface. nil or AllowAll
// rules make a table whose base chains accept everything.
func render(iface string, r *filter.Rules) plan {
	p := plan{table: TableName(iface)}
	if r.AllowAll() {
		p.chains = []chainDef{{name: chainInput, hook: "input"}, {name: chainForward, hook: "forward"}, {name: chainOutput, hook: "output"}}
		return p
	}
	jumpFrom := line{iif: iface, verdict: "jump " + chainFrom}
	jumpTo := line{oif: iface, verdict: "jump " + chainTo}
	p.chains = []chainDef{
		{name: chainInput, hook: "input", lines: []line{jumpFrom}},
		{name: chainForward, hook: "forward", lines: []line{jumpFrom, jumpTo}},
		{name: chainOutput, hook: "output", lines: []line{jumpTo}},
		{name: chainFrom},
		{name: chainTo},
	}
	from, to := &p.chains[3], &p.chains[4]
	for _, c := range []*chainDef{from, to} {
		c.lines = append(c.lines,
			line{established: true, verdict: "return"},
			// An echo reply passes only as the reply to a request that
			// passed (conntrack then says established), never by a rule.
			line{proto: filter.ProtoICMP, hasProto: true, icmpType: icmpEchoRepl, hasType: true, verdict: "drop"},
			line{proto: protoICMPv6, hasProto: true, icmpType: icmp6EchoRep, hasType: true, verdict: "drop"},
		)
	}
	var in, out []line
	for _, s := range r.Specs() {
		if s.Inbound {
			in = append(in, specLines(line{src: s.Peer, verdict: "return"}, s)...)
		} else {
			out = append(out, specLines(line{dst: s.Peer, verdict: "return"}, s)...)
		}
	}
	from.lines = append(from.lines, p.group(in, "in")...)
	to.lines = append(to.lines, p.group(out, "out")...)
	for _, c := range []*chainDef{from, to} {
		c.lines = append(c.lines, line{counter: true, verdict: "drop"})
	}
	return p
}

// group folds the lines that differ only in their peer's address (a /32
// or /128) into one line that looks the address up in a set: a new flow
// then costs one lookup per kind of rule rather than one comparison per
// peer, and a map of thousands of peers stays a table of a few rules.
// Lines for networks stay as they are. Sets are named <prefix><4|6>_<n>.
func (p *plan) group(lines []line, prefix string) []line {
	type shape struct {
		l  line // without its address
		v6 bool
	}
	var out []line
	at := map[shape]int{} // shape -> index of its set in p.sets
	for _, l := range lines {
		a := l.src
		if !a.IsValid() {
			a = l.dst
		}
		if a.Bits() != a.Addr().BitLen() {
			out = append(out, l)
			continue
		}
		k := shape{l: l, v6: a.Addr().Is6()}
		k.l.src, k.l.dst = netip.Prefix{}, netip.Prefix{}
		i, ok := at[k]
		if !ok {
			fam := 4
			if k.v6 {
				fam = 6
			}
			i = len(p.sets)
			at[k] = i
			p.sets = append(p.sets, setDef{name: fmt.Sprintf("%s%d_%d", prefix, fam, i), v6: k.v6})
			nl := k.l
			nl.set6 = k.v6
			if l.src.IsValid() {
				nl.srcSet = p.sets[i].name
			} else {
				nl.dstSet = p.sets[i].name
			}
			out = append(out, nl)
		}
		p.sets[i].elems = append(p.sets[i].elems, a.Addr())
	}
	for i := range p.sets {
		slices.SortFunc(p.sets[i].elems, netip.Addr.Compare)
		p.sets[i].elems = slices.Compact(p.sets[i].elems)
	}
	return out
}

// specLines are the lines of one Spec: one per protocol and port range
// (group then folds the peers of equal lines into a set).
func specLines(base line, s filter.Spec) []line {
	var protos []uint8
	switch {
	case s.Proto == filter.ProtoICMP && s.Peer.Addr().Is6():
		protos = []uint8{protoICMPv6}
	case s.Proto != filter.ProtoAny:
		protos = []uint8{s.Proto}
	case len(s.Ports) > 0:
		protos = []uint8{filter.ProtoTCP, filter.ProtoUDP} // only they have ports
	default:
		return []line{base}
	}
	var out []line
	for _, proto := range protos {
		l := base
		l.proto, l.hasProto = proto, true
		if len(s.Ports) == 0 {
			out = append(out, l)
			continue
		}
		if proto != filter.ProtoTCP && proto != filter.ProtoUDP {
			continue // ports on a protocol without them: nothing can match
		}
		for _, pr := range s.Ports {
			l.ports, l.hasPorts = pr, true
			out = append(out, l)
		}
	}
	return out
}

// String renders the line as `nft list` prints it (without counter
// values).
func (l line) String() string {
	var b []string
	if l.iif != "" {
		b = append(b, fmt.Sprintf("iifname %q", l.iif))
	}
	if l.oif != "" {
		b = append(b, fmt.Sprintf("oifname %q", l.oif))
	}
	if l.established {
		b = append(b, "ct state established,related")
	}
	if l.src.IsValid() {
		b = append(b, addrMatch(l.src, "saddr"))
	}
	if l.dst.IsValid() {
		b = append(b, addrMatch(l.dst, "daddr"))
	}
	fam := "ip"
	if l.set6 {
		fam = "ip6"
	}
	if l.srcSet != "" {
		b = append(b, fam+" saddr @"+l.srcSet)
	}
	if l.dstSet != "" {
		b = append(b, fam+" daddr @"+l.dstSet)
	}
	switch {
	case l.hasProto && l.hasType:
		icmp := "icmp"
		if l.proto == protoICMPv6 {
			icmp = "icmpv6"
		}
		typ := fmt.Sprint(l.icmpType)
		if (l.proto == filter.ProtoICMP && l.icmpType == icmpEchoRepl) || (l.proto == protoICMPv6 && l.icmpType == icmp6EchoRep) {
			typ = "echo-reply"
		}
		b = append(b, icmp+" type "+typ)
	case l.hasProto && l.hasPorts && l.ports.Lo == l.ports.Hi:
		b = append(b, fmt.Sprintf("%s dport %d", protoName(l.proto), l.ports.Lo))
	case l.hasProto && l.hasPorts:
		b = append(b, fmt.Sprintf("%s dport %d-%d", protoName(l.proto), l.ports.Lo, l.ports.Hi))
	case l.hasProto:
		b = append(b, "meta l4proto "+protoName(l.proto))
	}
	if l.counter {
		b = append(b, "counter")
	}
	b = append(b, l.verdict)
	return strings.Join(b, " ")
}

func addrMatch(p netip.Prefix, field string) string {
	fam, nfproto := "ip", "ipv4"
	if p.Addr().Is6() {
		fam, nfproto = "ip6", "ipv6"
	}
	if p.Bits() == 0 {
		return "meta nfproto " + nfproto
	}
	if p.Bits() == p.Addr().BitLen() {
		return fmt.Sprintf("%s %s %s", fam, field, p.Addr())
	}
	return fmt.Sprintf("%s %s %s", fam, field, p.Masked())
}

func protoName(p uint8) string {
	switch p {
	case filter.ProtoICMP:
		return "icmp"
	case filter.ProtoTCP:
		return "tcp"
	case filter.ProtoUDP:
		return "udp"
	case protoICMPv6:
		return "ipv6-icmp"
	}
	return fmt.Sprint(p)
}

// String renders the plan as an nft script (what `nft list table` shows,
// without counter values).
func (p plan) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "table inet %s {\n", p.table)
	for _, st := range p.sets {
		typ := "ipv4_addr"
		if st.v6 {
			typ = "ipv6_addr"
		}
		elems := make([]string, len(st.elems))
		for i, a := range st.elems {
			elems[i] = a.String()
		}
		fmt.Fprintf(&b, "\tset %s {\n\t\ttype %s\n\t\telements = { %s }\n\t}\n\n", st.name, typ, strings.Join(elems, ", "))
	}
	for i, c := range p.chains {
		if i > 0 {
			b.WriteString("\n")
		}
		fmt.Fprintf(&b, "\tchain %s {\n", c.name)
		if c.hook != "" {
			fmt.Fprintf(&b, "\t\ttype filter hook %s priority filter; policy accept;\n", c.hook)
		}
		for _, l := range c.lines {
			fmt.Fprintf(&b, "\t\t%s\n", l)
		}
		b.WriteString("\t}\n")
	}
	b.WriteString("}\n")
	return b.String()
}
