package filter

import (
	"net/netip"
	"reflect"
	"testing"

	controlv1 "meshd/api/control/v1"
)

func TestSpecsDescribeCompiledRules(t *testing.T) {
	r, err := Compile([]*controlv1.FirewallRule{
		out("100.64.0.3", controlv1.Protocol_PROTOCOL_ALL),
		in("100.64.0.3", controlv1.Protocol_PROTOCOL_UDP, 53, 0), // End 0: the single port 53
		in("10.1.0.0/16", controlv1.Protocol_PROTOCOL_ALL),
		in("100.64.0.2", controlv1.Protocol_PROTOCOL_TCP, 22, 22, 8000, 8080),
		in("100.64.0.2", controlv1.Protocol_PROTOCOL_ICMP),
		in("::ffff:100.64.0.4", controlv1.Protocol_PROTOCOL_ALL), // mapped: unmapped
		in("bogus", controlv1.Protocol_PROTOCOL_ALL),
	})
	if err == nil {
		t.Error("bad rule not reported")
	}
	p := netip.MustParsePrefix
	want := []Spec{
		{Inbound: true, Peer: p("100.64.0.2/32"), Proto: ProtoTCP, Ports: []PortRange{{22, 22}, {8000, 8080}}},
		{Inbound: true, Peer: p("100.64.0.2/32"), Proto: ProtoICMP},
		{Inbound: true, Peer: p("100.64.0.3/32"), Proto: ProtoUDP, Ports: []PortRange{{53, 53}}},
		{Inbound: true, Peer: p("100.64.0.4/32"), Proto: ProtoAny},
		{Inbound: true, Peer: p("10.1.0.0/16"), Proto: ProtoAny},
		{Inbound: false, Peer: p("100.64.0.3/32"), Proto: ProtoAny},
	}
	if got := r.Specs(); !reflect.DeepEqual(got, want) {
		t.Errorf("Specs:\n got %+v\nwant %+v", got, want)
	}
	if r.AllowAll() {
		t.Error("rules with rules allow all")
	}
}

func TestAllowAllHasNoSpecs(t *testing.T) {
	r, err := Compile(nil)
	if err != nil {
		t.Fatal(err)
	}
	var nilRules *Rules
	if !r.AllowAll() || r.Specs() != nil || !nilRules.AllowAll() || nilRules.Specs() != nil {
		t.Error("a map without rules must allow all and describe no rule")
	}
	// Only bad rules: nothing allowed by rule (the filter drops new flows).
	bad, _ := Compile([]*controlv1.FirewallRule{in("bogus", controlv1.Protocol_PROTOCOL_ALL)})
	if bad.AllowAll() || len(bad.Specs()) != 0 {
		t.Errorf("only bad rules: AllowAll %v, %d specs", bad.AllowAll(), len(bad.Specs()))
	}
	f := New(r)
	if f.Rules() != r {
		t.Error("Filter.Rules is not the rules it applies")
	}
	f.SetRules(bad)
	if f.Rules() != bad {
		t.Error("Filter.Rules after SetRules")
	}
}

// TestRulesStarts: the question a proxy asks before it dials matches what
// the filter does with the flow's first packet.
func TestRulesStarts(t *testing.T) {
	r, err := Compile([]*controlv1.FirewallRule{
		{PeerIp: "100.64.0.2", Direction: controlv1.Direction_DIRECTION_OUT, Protocol: controlv1.Protocol_PROTOCOL_TCP,
			Ports: []*controlv1.PortRange{{Start: 80, End: 80}}},
		{PeerIp: "10.9.0.0/24", Direction: controlv1.Direction_DIRECTION_IN, Protocol: controlv1.Protocol_PROTOCOL_ALL},
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		inbound bool
		peer    string
		proto   uint8
		port    uint16
		want    bool
	}{
		{false, "100.64.0.2", ProtoTCP, 80, true},
		{false, "::ffff:100.64.0.2", ProtoTCP, 80, true},
		{false, "100.64.0.2", ProtoTCP, 81, false},
		{false, "100.64.0.2", ProtoUDP, 80, false},
		{true, "100.64.0.2", ProtoTCP, 80, false},
		{true, "10.9.0.5", ProtoUDP, 53, true},
		{false, "10.9.0.5", ProtoTCP, 80, false},
		{false, "8.8.8.8", ProtoTCP, 80, false},
	} {
		if got := r.Starts(tc.inbound, netip.MustParseAddr(tc.peer), tc.proto, tc.port); got != tc.want {
			t.Errorf("Starts(in=%v, %s, %d, %d) = %v, want %v", tc.inbound, tc.peer, tc.proto, tc.port, got, tc.want)
		}
	}
	var none *Rules
	if !none.Starts(false, netip.MustParseAddr("8.8.8.8"), ProtoTCP, 1) {
		t.Error("nil rules (no firewall rules in the map) must accept everything")
	}
}
