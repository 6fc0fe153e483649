package filter

import (
	"encoding/binary"
	"net/netip"
	"testing"
	"time"

	controlv1 "meshd/api/control/v1"
)

var (
	self  = netip.MustParseAddr("100.64.0.1")
	alice = netip.MustParseAddr("100.64.0.2")
	bob   = netip.MustParseAddr("100.64.0.3")
)

func ipv4(proto uint8, src, dst netip.Addr, l4 []byte) []byte {
	b := make([]byte, 20+len(l4))
	b[0] = 0x45
	binary.BigEndian.PutUint16(b[2:4], uint16(len(b)))
	b[8] = 64
	b[9] = proto
	s, d := src.As4(), dst.As4()
	copy(b[12:16], s[:])
	copy(b[16:20], d[:])
	copy(b[20:], l4)
	return b
}

func tcp(src, dst netip.Addr, sport, dport uint16) []byte {
	l4 := make([]byte, 20)
	binary.BigEndian.PutUint16(l4[0:2], sport)
	binary.BigEndian.PutUint16(l4[2:4], dport)
	return ipv4(protoTCP, src, dst, l4)
}

func udp(src, dst netip.Addr, sport, dport uint16) []byte {
	l4 := make([]byte, 8)
	binary.BigEndian.PutUint16(l4[0:2], sport)
	binary.BigEndian.PutUint16(l4[2:4], dport)
	return ipv4(protoUDP, src, dst, l4)
}

func icmpEcho(src, dst netip.Addr, typ uint8, id uint16) []byte {
	l4 := make([]byte, 8)
	l4[0] = typ
	binary.BigEndian.PutUint16(l4[4:6], id)
	return ipv4(protoICMP, src, dst, l4)
}

func compile(t testing.TB, frs ...*controlv1.FirewallRule) *Filter {
	t.Helper()
	r, err := Compile(frs)
	if err != nil {
		t.Fatal(err)
	}
	return New(r)
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

type pkt struct {
	name    string
	b       []byte
	inbound bool
	want    bool
}

func check(t *testing.T, f *Filter, pkts []pkt) {
	t.Helper()
	for _, p := range pkts {
		if got := f.Allow(p.b, p.inbound); got != p.want {
			t.Errorf("%s: Allow = %v, want %v", p.name, got, p.want)
		}
	}
}

func TestNoRulesAcceptsEverything(t *testing.T) {
	f := compile(t)
	check(t, f, []pkt{
		{"in tcp", tcp(alice, self, 1, 22), true, true},
		{"out udp", udp(self, bob, 1, 53), false, true},
		{"garbage", []byte{0xff}, true, true},
	})
}

func TestInboundRulesAndReplies(t *testing.T) {
	// Alice may reach our TCP 22 and 8000-8080; we may reach Bob (anything).
	f := compile(t,
		in("100.64.0.2", controlv1.Protocol_PROTOCOL_TCP, 22, 22, 8000, 8080),
		out("100.64.0.3", controlv1.Protocol_PROTOCOL_ALL),
	)
	check(t, f, []pkt{
		{"alice ssh", tcp(alice, self, 40000, 22), true, true},
		{"our ssh reply to alice", tcp(self, alice, 22, 40000), false, true},
		{"alice port 8080", tcp(alice, self, 40001, 8080), true, true},
		{"alice port 8081", tcp(alice, self, 40002, 8081), true, false},
		{"alice udp 22", udp(alice, self, 40000, 22), true, false},
		{"bob ssh (no in rule)", tcp(bob, self, 40000, 22), true, false},
		{"we open to alice (no out rule)", tcp(self, alice, 50000, 80), false, false},
		{"we open to bob", tcp(self, bob, 50000, 80), false, true},
		{"bob's reply", tcp(bob, self, 80, 50000), true, true},
		{"bob from another port", tcp(bob, self, 81, 50000), true, false},
		{"ping bob", icmpEcho(self, bob, 8, 7), false, true},
		{"bob's echo reply", icmpEcho(bob, self, 0, 7), true, true},
		{"echo reply with another id", icmpEcho(bob, self, 0, 8), true, false},
		{"bob pings us", icmpEcho(bob, self, 8, 9), true, false},
		{"truncated", []byte{0x45, 0}, true, false},
	})
}

func TestBidirectionalPing(t *testing.T) {
	f := compile(t, in("100.64.0.2", controlv1.Protocol_PROTOCOL_ICMP), out("100.64.0.2", controlv1.Protocol_PROTOCOL_ICMP))
	check(t, f, []pkt{
		{"alice pings", icmpEcho(alice, self, 8, 1), true, true},
		{"we answer", icmpEcho(self, alice, 0, 1), false, true},
		{"we ping", icmpEcho(self, alice, 8, 2), false, true},
		{"alice answers", icmpEcho(alice, self, 0, 2), true, true},
		{"alice tcp", tcp(alice, self, 1, 2), true, false},
	})
}

func TestFlowsExpireAndSurviveRuleChange(t *testing.T) {
	now := time.Unix(1000, 0)
	f := compile(t, out("100.64.0.3", controlv1.Protocol_PROTOCOL_UDP))
	f.SetClock(func() time.Time { return now })
	if !f.Allow(udp(self, bob, 5000, 53), false) {
		t.Fatal("outbound udp refused")
	}
	// New rules without the out rule: the open flow keeps working.
	r, _ := Compile([]*controlv1.FirewallRule{in("100.64.0.9", controlv1.Protocol_PROTOCOL_ALL)})
	f.SetRules(r)
	if !f.Allow(udp(bob, self, 53, 5000), true) {
		t.Fatal("reply refused after a rule change")
	}
	now = now.Add(UDPTimeout + time.Second)
	if f.Allow(udp(bob, self, 53, 5000), true) {
		t.Fatal("reply accepted after the flow expired")
	}
	f.Sweep()
	if f.Flows() != 0 {
		t.Fatalf("%d flows after sweep", f.Flows())
	}
}

func TestCompileReportsBadRulesButKeepsGoodOnes(t *testing.T) {
	r, err := Compile([]*controlv1.FirewallRule{
		in("not-an-ip", controlv1.Protocol_PROTOCOL_ALL),
		{PeerIp: "100.64.0.2", Protocol: controlv1.Protocol_PROTOCOL_ALL}, // no direction
		in("100.64.0.2", controlv1.Protocol_PROTOCOL_TCP, 10, 5),          // bad range
		in("100.64.0.0/24", controlv1.Protocol_PROTOCOL_UDP),
	})
	if err == nil {
		t.Fatal("bad rules not reported")
	}
	if r.Len() != 1 {
		t.Fatalf("%d rules compiled, want the one good one", r.Len())
	}
	f := New(r)
	if !f.Allow(udp(alice, self, 1, 2), true) || f.Allow(tcp(alice, self, 1, 10), true) {
		t.Fatal("prefix rule not applied, or a bad rule applied")
	}
}

func TestIPv6(t *testing.T) {
	f := compile(t, in("fd00::2", controlv1.Protocol_PROTOCOL_TCP, 443, 443))
	b := make([]byte, 60)
	b[0] = 0x60
	b[6] = protoTCP
	src, dst := netip.MustParseAddr("fd00::2").As16(), netip.MustParseAddr("fd00::1").As16()
	copy(b[8:24], src[:])
	copy(b[24:40], dst[:])
	binary.BigEndian.PutUint16(b[40:42], 1234)
	binary.BigEndian.PutUint16(b[42:44], 443)
	if !f.Allow(b, true) {
		t.Fatal("ipv6 tcp 443 refused")
	}
	binary.BigEndian.PutUint16(b[42:44], 444)
	if f.Allow(b, true) {
		t.Fatal("ipv6 tcp 444 accepted")
	}
}

func TestAllowDoesNotAllocateOnKnownFlows(t *testing.T) {
	f := compile(t, in("100.64.0.2", controlv1.Protocol_PROTOCOL_TCP, 22, 22))
	p, reply, denied := tcp(alice, self, 40000, 22), tcp(self, alice, 22, 40000), tcp(bob, self, 1, 22)
	f.Allow(p, true)
	allocs := testing.AllocsPerRun(1000, func() {
		f.Allow(p, true)
		f.Allow(reply, false)
		f.Allow(denied, true)
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per packet", allocs)
	}
}

func BenchmarkAllowKnownFlow(b *testing.B) {
	f := compile(b, in("100.64.0.2", controlv1.Protocol_PROTOCOL_TCP, 22, 22))
	p := tcp(alice, self, 40000, 22)
	f.Allow(p, true)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			f.Allow(p, true)
		}
	})
}
