package netmap

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	controlv1 "meshd/api/control/v1"
)

// world builds an Input: peers named by their first letter's position
// (a=.1, b=.2, ...), each in the groups listed.
func world(groups map[string][]string, policies ...Policy) *Input {
	in := &Input{Settings: Settings{Domain: "mesh.test", Network: netip.MustParsePrefix("100.64.0.0/16")}}
	in.Groups = append(in.Groups, Group{ID: "all", Name: "All", All: true})
	seen := map[string]bool{}
	for _, ms := range groups {
		for _, m := range ms {
			seen[m] = true
		}
	}
	var names []string
	for n := range seen {
		names = append(names, n)
	}
	slices.Sort(names)
	var gnames []string
	for g := range groups {
		gnames = append(gnames, g)
	}
	slices.Sort(gnames)
	for _, g := range gnames {
		in.Groups = append(in.Groups, Group{ID: g, Name: g})
	}
	for _, n := range names {
		p := Peer{ID: n, Key: "key-" + n, Name: n, Label: n, Online: true,
			IP: netip.AddrFrom4([4]byte{100, 64, 0, byte(n[0] - 'a' + 1)})}
		for _, g := range gnames {
			if slices.Contains(groups[g], n) {
				p.Groups = append(p.Groups, g)
			}
		}
		in.Peers = append(in.Peers, p)
	}
	in.Policies = policies
	return in
}

func peerNames(m *controlv1.NetworkMap) []string {
	var out []string
	for _, p := range m.Peers {
		out = append(out, p.Name)
	}
	return out
}

func ruleStrings(m *controlv1.NetworkMap) []string {
	var out []string
	for _, r := range m.FirewallRules {
		s := fmt.Sprintf("%s %s %s", strings.TrimPrefix(r.Direction.String(), "DIRECTION_"), r.PeerIp,
			ProtocolName(r.Protocol))
		for _, p := range r.Ports {
			s += fmt.Sprintf(" %d-%d", p.Start, p.End)
		}
		out = append(out, s)
	}
	return out
}

func TestAllToAllBidirectional(t *testing.T) {
	in := world(map[string][]string{"x": {"a", "b", "c"}},
		Policy{ID: "def", Enabled: true, Sources: []string{"all"}, Destinations: []string{"all"},
			Protocol: controlv1.Protocol_PROTOCOL_ALL, Bidirectional: true})
	ix := Build(in)
	m := ix.Map("b")
	if got := peerNames(m); !slices.Equal(got, []string{"a", "c"}) {
		t.Fatalf("peers of b = %v", got)
	}
	want := []string{"IN 100.64.0.1 all", "IN 100.64.0.3 all", "OUT 100.64.0.1 all", "OUT 100.64.0.3 all"}
	if got := ruleStrings(m); !slices.Equal(got, want) {
		t.Fatalf("rules of b = %v", got)
	}
	if m.Self.OverlayIp != "100.64.0.2" || m.Self.DnsName != "b.mesh.test" || m.Self.Mtu != DefaultMTU ||
		m.Self.OverlayNetwork != "100.64.0.0/16" {
		t.Fatalf("self = %v", m.Self)
	}
	if m.Peers[0].AllowedIps[0] != "100.64.0.1/32" || m.Peers[0].DnsName != "a.mesh.test" {
		t.Fatalf("remote = %v", m.Peers[0])
	}
	if ix.Map("nobody") != nil {
		t.Fatal("map for an unknown peer")
	}
}

// A one-way tcp/443 rule: eng sees servers and servers see eng; servers
// accept 443 from eng; others see nobody.
func TestOneWayPolicyScopesPeers(t *testing.T) {
	ports, err := ParsePorts(controlv1.Protocol_PROTOCOL_TCP, []string{"443", "8000-8100"})
	if err != nil {
		t.Fatal(err)
	}
	in := world(map[string][]string{"eng": {"a", "b"}, "servers": {"c"}, "other": {"d"}},
		Policy{ID: "web", Enabled: true, Sources: []string{"eng"}, Destinations: []string{"servers"},
			Protocol: controlv1.Protocol_PROTOCOL_TCP, Ports: ports},
		Policy{ID: "off", Enabled: false, Sources: []string{"all"}, Destinations: []string{"all"}})
	ix := Build(in)
	for peer, want := range map[string][]string{"a": {"c"}, "b": {"c"}, "c": {"a", "b"}, "d": nil} {
		if got := peerNames(ix.Map(peer)); !slices.Equal(got, want) {
			t.Errorf("peers of %s = %v, want %v", peer, got, want)
		}
	}
	if got, want := ruleStrings(ix.Map("c")), []string{"IN 100.64.0.1 tcp 443-443 8000-8100", "IN 100.64.0.2 tcp 443-443 8000-8100"}; !slices.Equal(got, want) {
		t.Errorf("rules of c = %v", got)
	}
	if got, want := ruleStrings(ix.Map("a")), []string{"OUT 100.64.0.3 tcp 443-443 8000-8100"}; !slices.Equal(got, want) {
		t.Errorf("rules of a = %v", got)
	}
	if got := ix.Neighbors("c"); !slices.Equal(got, []string{"a", "b"}) {
		t.Errorf("neighbors of c = %v", got)
	}
	if got := ix.Members("eng"); !slices.Equal(got, []string{"a", "b"}) {
		t.Errorf("members of eng = %v", got)
	}
	if got := ix.Members("all"); len(got) != 4 {
		t.Errorf("members of All = %v", got)
	}
}

func TestRoutesPickReachableOnlineRoutingPeer(t *testing.T) {
	in := world(map[string][]string{"eng": {"a", "b"}, "gw": {"c", "d"}, "lonely": {"e"}},
		Policy{ID: "p", Enabled: true, Sources: []string{"eng"}, Destinations: []string{"gw"}, Bidirectional: true})
	in.Peers[2].Online = false // c
	net := netip.MustParsePrefix("192.168.1.0/24")
	in.Routes = []Route{
		{ID: "r1", Network: net, Peers: []string{"c"}, Metric: 10, Enabled: true, Masquerade: true},
		{ID: "r2", Network: net, Peers: []string{"d"}, Metric: 20, Enabled: true},
	}
	ix := Build(in)
	a := ix.Map("a")
	if len(a.Routes) != 1 || a.Routes[0].PeerPublicKey != "key-d" || a.Routes[0].Id != "r2" {
		t.Fatalf("routes of a = %v (want via online d)", a.Routes)
	}
	for _, p := range a.Peers {
		want := []string{p.OverlayIp + "/32"}
		if p.Name == "d" {
			want = append(want, "192.168.1.0/24")
		}
		if !slices.Equal(p.AllowedIps, want) {
			t.Errorf("allowed ips of %s in a's map = %v, want %v", p.Name, p.AllowedIps, want)
		}
	}
	// The shared remote entry of d is not modified.
	if got := ix.Map("c").Peers; len(got) != 2 {
		t.Fatalf("peers of c = %v", got)
	}
	for _, p := range ix.Map("b").Peers {
		if p.Name == "c" && len(p.AllowedIps) != 1 {
			t.Fatalf("c routes for b too: %v", p.AllowedIps)
		}
	}
	c := ix.Map("c")
	if len(c.Routes) != 1 || c.Routes[0].PeerPublicKey != "key-c" || !c.Routes[0].Masquerade {
		t.Fatalf("routes of routing peer c = %v", c.Routes)
	}
	// e has no policy to any routing peer: no route.
	if r := ix.Map("e").Routes; len(r) != 0 {
		t.Fatalf("routes of e = %v", r)
	}
	// Restricting r2 to gw takes it away from a; r1's offline c remains.
	in.Routes[1].Groups = []string{"gw"}
	if r := Build(in).Map("a").Routes; len(r) != 1 || r[0].PeerPublicKey != "key-c" {
		t.Fatalf("routes of a = %v, want via c", r)
	}
}

func TestDNSNameserverGroupsByGroup(t *testing.T) {
	in := world(map[string][]string{"eng": {"a"}, "ops": {"b"}})
	in.NameserverGroups = []NameserverGroup{
		{Name: "global", Nameservers: []string{"1.1.1.1"}, Enabled: true},
		{Name: "corp", Nameservers: []string{"10.0.0.53"}, MatchDomains: []string{"corp"}, Enabled: true, Groups: []string{"eng"}},
		{Name: "off", Nameservers: []string{"9.9.9.9"}},
	}
	in.Records = []Record{{Name: "nas", Type: "A", Value: "100.64.0.9", TTL: 60}}
	ix := Build(in)
	names := func(id string) []string {
		var out []string
		for _, n := range ix.Map(id).Dns.NameserverGroups {
			out = append(out, n.Name)
		}
		return out
	}
	if got := names("a"); !slices.Equal(got, []string{"global", "corp"}) {
		t.Errorf("a uses %v", got)
	}
	if got := names("b"); !slices.Equal(got, []string{"global"}) {
		t.Errorf("b uses %v", got)
	}
	if d := ix.Map("b").Dns; d.Domain != "mesh.test" || len(d.Records) != 1 {
		t.Errorf("dns = %v", d)
	}
}

func TestAffected(t *testing.T) {
	pol := Policy{ID: "p", Enabled: true, Sources: []string{"eng"}, Destinations: []string{"servers"}}
	old := Build(world(map[string][]string{"eng": {"a"}, "servers": {"c"}, "other": {"d", "e"}}, pol))
	// b joins eng: b, and servers (who now see b), are affected; d, e not.
	cur := Build(world(map[string][]string{"eng": {"a", "b"}, "servers": {"c"}, "other": {"d", "e"}}, pol))
	ids, all := Affected(old, cur, Change{Peers: []string{"b"}})
	if all || len(ids) != 2 {
		t.Fatalf("affected = %v %v, want b and c", ids, all)
	}
	if _, ok := ids["c"]; !ok {
		t.Fatalf("affected = %v, want c", ids)
	}
	ids, _ = Affected(old, cur, Change{Groups: []string{"other"}, Only: []string{"a"}})
	if len(ids) != 3 {
		t.Fatalf("affected = %v, want a d e", ids)
	}
	if _, all := Affected(old, cur, Change{All: true}); !all {
		t.Fatal("All change does not affect all")
	}
}

func TestParsePorts(t *testing.T) {
	for _, bad := range [][]string{{"0"}, {"70000"}, {"10-5"}, {"x"}, {"1-"}} {
		if _, err := ParsePorts(controlv1.Protocol_PROTOCOL_TCP, bad); err == nil {
			t.Errorf("ports %v accepted", bad)
		}
	}
	if _, err := ParsePorts(controlv1.Protocol_PROTOCOL_ICMP, []string{"1"}); err == nil {
		t.Error("icmp took ports")
	}
	if _, err := ParseProtocol("sctp"); err == nil {
		t.Error("sctp accepted")
	}
}

// A bidirectional policy between two groups: a peer in both sides is
// connected once with the union, a peer in one side with the other side.
func TestBidirectionalOverlappingGroups(t *testing.T) {
	in := world(map[string][]string{"x": {"a", "b"}, "y": {"b", "c"}},
		Policy{ID: "p", Enabled: true, Sources: []string{"x"}, Destinations: []string{"y"}, Bidirectional: true,
			Protocol: controlv1.Protocol_PROTOCOL_UDP})
	ix := Build(in)
	if got, want := ruleStrings(ix.Map("b")), []string{"IN 100.64.0.1 udp", "IN 100.64.0.3 udp", "OUT 100.64.0.1 udp", "OUT 100.64.0.3 udp"}; !slices.Equal(got, want) {
		t.Errorf("rules of b = %v", got)
	}
	if got, want := ruleStrings(ix.Map("a")), []string{"IN 100.64.0.2 udp", "IN 100.64.0.3 udp", "OUT 100.64.0.2 udp", "OUT 100.64.0.3 udp"}; !slices.Equal(got, want) {
		t.Errorf("rules of a = %v", got)
	}
	if got := peerNames(ix.Map("c")); !slices.Equal(got, []string{"a", "b"}) {
		t.Errorf("peers of c = %v", got)
	}
}
