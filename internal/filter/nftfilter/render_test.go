package nftfilter

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	controlv1 "meshd/api/control/v1"
	"meshd/internal/filter"
)

func TestRenderTable(t *testing.T) {
	r := compile(t,
		in("100.64.0.2", controlv1.Protocol_PROTOCOL_TCP, 22, 22, 8000, 8080),
		in("100.64.0.2", controlv1.Protocol_PROTOCOL_ICMP),
		in("100.64.0.3", controlv1.Protocol_PROTOCOL_TCP, 22, 22),
		in("fd00:64::2", controlv1.Protocol_PROTOCOL_ICMP),
		in("10.1.0.0/16", controlv1.Protocol_PROTOCOL_ALL, 53, 53),
		out("100.64.0.3", controlv1.Protocol_PROTOCOL_ALL),
		out("0.0.0.0/0", controlv1.Protocol_PROTOCOL_UDP),
	)
	want := `table inet meshd-filter-wg0 {
	set in4_0 {
		type ipv4_addr
		elements = { 100.64.0.2, 100.64.0.3 }
	}

	set in4_1 {
		type ipv4_addr
		elements = { 100.64.0.2 }
	}

	set in4_2 {
		type ipv4_addr
		elements = { 100.64.0.2 }
	}

	set in6_3 {
		type ipv6_addr
		elements = { fd00:64::2 }
	}

	set out4_4 {
		type ipv4_addr
		elements = { 100.64.0.3 }
	}

	chain input {
		type filter hook input priority filter; policy accept;
		iifname "wg0" jump from_peers
	}

	chain forward {
		type filter hook forward priority filter; policy accept;
		iifname "wg0" jump from_peers
		oifname "wg0" jump to_peers
	}

	chain output {
		type filter hook output priority filter; policy accept;
		oifname "wg0" jump to_peers
	}

	chain from_peers {
		ct state established,related return
		icmp type echo-reply drop
		icmpv6 type echo-reply drop
		ip saddr @in4_0 tcp dport 22 return
		ip saddr @in4_1 tcp dport 8000-8080 return
		ip saddr @in4_2 meta l4proto icmp return
		ip6 saddr @in6_3 meta l4proto ipv6-icmp return
		ip saddr 10.1.0.0/16 tcp dport 53 return
		ip saddr 10.1.0.0/16 udp dport 53 return
		counter drop
	}

	chain to_peers {
		ct state established,related return
		icmp type echo-reply drop
		icmpv6 type echo-reply drop
		ip daddr @out4_4 return
		meta nfproto ipv4 meta l4proto udp return
		counter drop
	}
}
`
	if got := render("wg0", r).String(); got != want {
		t.Errorf("render:\n%s\nwant:\n%s", got, want)
	}
}

// TestRenderGroupsPeersInSets: a thousand peers with the same rules make
// a table of a few rules and sets of a thousand addresses, not thousands of
// rules.
func TestRenderGroupsPeersInSets(t *testing.T) {
	var frs []*controlv1.FirewallRule
	for i := 0; i < 1000; i++ {
		peer := fmt.Sprintf("100.64.%d.%d", 1+i/250, 1+i%250)
		frs = append(frs, in(peer, controlv1.Protocol_PROTOCOL_TCP, 22, 22, 443, 443), out(peer, controlv1.Protocol_PROTOCOL_ALL))
	}
	frs = append(frs, in("fd00::7", controlv1.Protocol_PROTOCOL_TCP, 22, 22))
	p := render("wg0", compile(t, frs...))
	rules := 0
	for _, c := range p.chains {
		rules += len(c.lines)
	}
	var sizes []int
	for _, st := range p.sets {
		sizes = append(sizes, len(st.elems))
	}
	// in: tcp 22 (v4), tcp 443 (v4), tcp 22 (v6); out: any (v4).
	if want := []int{1000, 1000, 1, 1000}; !slices.Equal(sizes, want) {
		t.Errorf("set sizes %v, want %v", sizes, want)
	}
	if rules > 20 {
		t.Errorf("%d rules for one shape of rule per peer:\n%s", rules, p)
	}
}

func TestRenderAcceptAll(t *testing.T) {
	for _, r := range []*filter.Rules{nil, compile(t)} {
		p := render("wg0", r)
		if p.table != "meshd-filter-wg0" || len(p.chains) != 3 {
			t.Fatalf("accept-all plan: %s", p)
		}
		for _, c := range p.chains {
			if c.hook == "" || len(c.lines) != 0 {
				t.Errorf("accept-all chain %s: hook %q, %d rules", c.name, c.hook, len(c.lines))
			}
		}
	}
}

// TestRenderAgreesWithFilter judges a grid of first packets of flows (no
// conntrack entry yet) with the rendered chains and with internal/filter's
// Filter for the same compiled rules: they must agree on every one.
func TestRenderAgreesWithFilter(t *testing.T) {
	rulesets := map[string]*filter.Rules{
		"mixed": compile(t,
			in("100.64.0.2", controlv1.Protocol_PROTOCOL_TCP, 22, 22, 8000, 8001),
			in("100.64.0.2", controlv1.Protocol_PROTOCOL_ICMP),
			in("100.64.0.9", controlv1.Protocol_PROTOCOL_TCP, 8000, 8001),
			in("fd00:64::2", controlv1.Protocol_PROTOCOL_ICMP),
			in("fd00:64::2", controlv1.Protocol_PROTOCOL_UDP, 53, 53),
			in("10.1.0.0/16", controlv1.Protocol_PROTOCOL_ALL, 53, 53),
			out("100.64.0.3", controlv1.Protocol_PROTOCOL_ALL),
			out("10.1.2.0/24", controlv1.Protocol_PROTOCOL_TCP),
		),
		"any protocol": compile(t, in("100.64.0.3", controlv1.Protocol_PROTOCOL_ALL), out("::/0", controlv1.Protocol_PROTOCOL_ALL)),
		"only bad rules": func() *filter.Rules {
			r, _ := filter.Compile([]*controlv1.FirewallRule{in("bogus", controlv1.Protocol_PROTOCOL_ALL)})
			return r
		}(),
		"none": compile(t),
	}
	self4, self6 := netip.MustParseAddr("100.64.0.1"), netip.MustParseAddr("fd00:64::1")
	remotes := []string{"100.64.0.2", "100.64.0.3", "100.64.0.9", "10.1.2.3", "10.2.0.1", "fd00:64::2", "fd00:64::3"}
	type kind struct {
		proto   uint8
		icmpTyp uint8
	}
	kinds := []kind{{6, 0}, {17, 0}, {1, 8}, {1, 0}, {1, 3}, {58, 128}, {58, 129}, {47, 0}}
	ports := []uint16{22, 23, 53, 8000, 8001, 8002}
	n := 0
	for name, r := range rulesets {
		p := render("wg0", r)
		for _, rs := range remotes {
			remote := netip.MustParseAddr(rs)
			self := self4
			if remote.Is6() {
				self = self6
			}
			for _, k := range kinds {
				if (k.proto == 1 && remote.Is6()) || (k.proto == 58 && remote.Is4()) {
					continue
				}
				for _, port := range ports {
					for _, inbound := range []bool{true, false} {
						src, dst := self, remote
						if inbound {
							src, dst = remote, self
						}
						pkt := packet(src, dst, k.proto, k.icmpTyp, port)
						want := filter.New(r).Allow(pkt, inbound)
						got := p.judge(testPacket{inbound: inbound, src: src, dst: dst, proto: k.proto, icmpType: k.icmpTyp, dport: port})
						if got != want {
							t.Errorf("%s: inbound=%v %s -> %s proto %d type %d port %d: nft %v, filter %v",
								name, inbound, src, dst, k.proto, k.icmpTyp, port, got, want)
						}
						n++
					}
				}
			}
		}
	}
	if n < 500 {
		t.Fatalf("only %d packets judged", n)
	}
}

// testPacket is what the rendered matches look at.
type testPacket struct {
	inbound     bool
	src, dst    netip.Addr
	proto       uint8
	icmpType    uint8
	dport       uint16
	established bool
	sets        map[string][]netip.Addr // the plan's sets (judge fills it in)
}

// judge runs the packet through the plan's input (inbound) or output chain
// as nftables would: true for accept.
func (p plan) judge(pk testPacket) bool {
	chains := map[string]chainDef{}
	for _, c := range p.chains {
		chains[c.name] = c
	}
	pk.sets = map[string][]netip.Addr{}
	for _, st := range p.sets {
		pk.sets[st.name] = st.elems
	}
	base := chainOutput
	if pk.inbound {
		base = chainInput
	}
	v := p.run(chains, chains[base], pk, 0)
	return v != "drop"
}

func (p plan) run(chains map[string]chainDef, c chainDef, pk testPacket, depth int) string {
	if depth > 4 {
		panic("jump loop")
	}
	for _, l := range c.lines {
		if !l.matches(pk) {
			continue
		}
		switch {
		case l.verdict == "drop":
			return "drop"
		case l.verdict == "return":
			return "return"
		case strings.HasPrefix(l.verdict, "jump "):
			if v := p.run(chains, chains[strings.TrimPrefix(l.verdict, "jump ")], pk, depth+1); v == "drop" {
				return v
			}
		default:
			panic("verdict " + l.verdict)
		}
	}
	return "return"
}

func (l line) matches(pk testPacket) bool {
	if l.iif != "" && (!pk.inbound || l.iif != "wg0") {
		return false
	}
	if l.oif != "" && (pk.inbound || l.oif != "wg0") {
		return false
	}
	if l.established && !pk.established {
		return false
	}
	if l.src.IsValid() && !(l.src.Addr().Is4() == pk.src.Is4() && l.src.Contains(pk.src)) {
		return false
	}
	if l.dst.IsValid() && !(l.dst.Addr().Is4() == pk.dst.Is4() && l.dst.Contains(pk.dst)) {
		return false
	}
	if l.srcSet != "" && (l.set6 != pk.src.Is6() || !slices.Contains(pk.sets[l.srcSet], pk.src)) {
		return false
	}
	if l.dstSet != "" && (l.set6 != pk.dst.Is6() || !slices.Contains(pk.sets[l.dstSet], pk.dst)) {
		return false
	}
	if l.hasProto && l.proto != pk.proto {
		return false
	}
	if l.hasType && l.icmpType != pk.icmpType {
		return false
	}
	if l.hasPorts && (pk.dport < l.ports.Lo || pk.dport > l.ports.Hi) {
		return false
	}
	return true
}

// packet builds an IPv4 or IPv6 packet with a transport header: TCP or UDP
// with the destination port, ICMP/ICMPv6 with the type (id 7), anything
// else with 8 zero bytes.
func packet(src, dst netip.Addr, proto, icmpType uint8, dport uint16) []byte {
	l4 := make([]byte, 20)
	switch proto {
	case 6, 17:
		binary.BigEndian.PutUint16(l4[0:2], 40000)
		binary.BigEndian.PutUint16(l4[2:4], dport)
	case 1, 58:
		l4[0] = icmpType
		binary.BigEndian.PutUint16(l4[4:6], 7)
	}
	if src.Is4() {
		b := make([]byte, 20+len(l4))
		b[0] = 0x45
		binary.BigEndian.PutUint16(b[2:4], uint16(len(b)))
		b[8], b[9] = 64, proto
		s, d := src.As4(), dst.As4()
		copy(b[12:16], s[:])
		copy(b[16:20], d[:])
		copy(b[20:], l4)
		return b
	}
	b := make([]byte, 40+len(l4))
	b[0] = 0x60
	binary.BigEndian.PutUint16(b[4:6], uint16(len(l4)))
	b[6], b[7] = proto, 64
	s, d := src.As16(), dst.As16()
	copy(b[8:24], s[:])
	copy(b[24:40], d[:])
	copy(b[40:], l4)
	return b
}

func in(peer string, proto controlv1.Protocol, ports ...uint32) *controlv1.FirewallRule {
	r := &controlv1.FirewallRule{PeerIp: peer, Direction: controlv1.Direction_DIRECTION_IN, Protocol: proto}
	for i := 0; i+1 < len(ports); i += 2 {
		r.Ports = append(r.Ports, &controlv1.PortRange{Start: ports[i], End: ports[i+1]})
	}
	return r
}

func out(peer string, proto controlv1.Protocol) *controlv1.FirewallRule {
	return &controlv1.FirewallRule{PeerIp: peer, Direction: controlv1.Direction_DIRECTION_OUT, Protocol: proto}
}

func compile(tb testing.TB, frs ...*controlv1.FirewallRule) *filter.Rules {
	tb.Helper()
	r, err := filter.Compile(frs)
	if err != nil {
		tb.Fatal(err)
	}
	return r
}

func TestTableName(t *testing.T) {
	if got := TableName("meshd0"); got != "meshd-filter-meshd0" {
		t.Errorf("TableName = %q", got)
	}
	if !strings.HasPrefix(TableName("x"), TablePrefix) {
		t.Error("table name without TablePrefix")
	}
}
