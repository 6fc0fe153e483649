package control_test

import (
	"context"
	"slices"
	"testing"

	"connectrpc.com/connect"

	adminv1 "meshd/api/admin/v1"
	"meshd/internal/control"
	"meshd/internal/control/controltest"
)

// settled: the map lists exactly want, all online.
func settled(want ...string) func(*controltest.Map) bool {
	return func(m *controltest.Map) bool {
		if !slices.Equal(controltest.PeerNames(m), want) {
			return false
		}
		for _, p := range m.Peers {
			if !p.Online {
				return false
			}
		}
		return true
	}
}

func agents(t *testing.T, h *controltest.Harness, names ...string) []*controltest.Agent {
	t.Helper()
	var out []*controltest.Agent
	for _, n := range names {
		out = append(out, h.AddAgent(controltest.AgentOptions{Hostname: n}))
	}
	return out
}

func must[T any](t testing.TB) func(*connect.Response[T], error) *T {
	return func(r *connect.Response[T], err error) *T {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return r.Msg
	}
}

func withRelays(o *control.Options) {
	o.Relays = control.RelayOptions{URLs: []string{"stun:relay.test:3478", "turn:relay.test:3478?transport=udp",
		"turns:relay.test:5349?transport=tcp"}}
	o.SignalPin = "sha256:0000000000000000000000000000000000000000000000000000000000000000"
}

// The default policy connects everyone with everyone.
func TestMapsDefaultPolicy(t *testing.T) {
	h := controltest.NewHarness(t, 0, controltest.WithOptions(withRelays))
	as := agents(t, h, "alpha", "beta", "gamma")
	as[0].WaitFor(t, "peers", settled("beta", "gamma"))
	as[1].WaitFor(t, "peers", settled("alpha", "gamma"))
	as[2].WaitFor(t, "peers", settled("alpha", "beta"))
	golden(t, renderMaps(as...))
}

// Groups and a one-way tcp policy: eng reaches servers on 443 and 8000-8100;
// others see nobody.
func TestMapsGroupPolicy(t *testing.T) {
	h := controltest.NewHarness(t, 0)
	ctx := context.Background()
	as := agents(t, h, "eng-1", "eng-2", "db", "other")
	must[adminv1.Group](t)(h.Admin.CreateGroup(ctx, connect.NewRequest(&adminv1.CreateGroupRequest{Name: "eng", Peers: []string{"eng-1", "eng-2"}})))
	must[adminv1.Group](t)(h.Admin.CreateGroup(ctx, connect.NewRequest(&adminv1.CreateGroupRequest{Name: "servers", Peers: []string{"db"}})))
	must[adminv1.Policy](t)(h.Admin.CreatePolicy(ctx, connect.NewRequest(&adminv1.CreatePolicyRequest{Name: "web",
		Sources: []string{"eng"}, Destinations: []string{"servers"}, Protocol: "tcp", Ports: []string{"443", "8000-8100"}})))
	must[adminv1.DeletePolicyResponse](t)(h.Admin.DeletePolicy(ctx, connect.NewRequest(&adminv1.DeletePolicyRequest{Id: "Default"})))

	as[0].WaitFor(t, "eng view", settled("db"))
	as[1].WaitFor(t, "eng view", settled("db"))
	db := as[2].WaitFor(t, "server view", settled("eng-1", "eng-2"))
	as[3].WaitFor(t, "nobody", settled())
	// The server accepts 443 and 8000-8100 from each eng peer, nothing else.
	if len(db.FirewallRules) != 2 {
		t.Fatalf("db rules = %v", db.FirewallRules)
	}
	for _, r := range db.FirewallRules {
		if r.Direction.String() != "DIRECTION_IN" || r.Protocol.String() != "PROTOCOL_TCP" || len(r.Ports) != 2 {
			t.Fatalf("db rule = %v", r)
		}
	}
	golden(t, renderMaps(as...))
}

// A bidirectional policy, a route through a gateway and DNS: the client gets
// the route through the gateway it may reach, with the network in that
// peer's allowed IPs; nameserver groups go to their groups only.
func TestMapsRoutesAndDNS(t *testing.T) {
	h := controltest.NewHarness(t, 0)
	ctx := context.Background()
	as := agents(t, h, "laptop", "gw", "phone")
	must[adminv1.Group](t)(h.Admin.CreateGroup(ctx, connect.NewRequest(&adminv1.CreateGroupRequest{Name: "home", Peers: []string{"laptop", "gw"}})))
	must[adminv1.Policy](t)(h.Admin.CreatePolicy(ctx, connect.NewRequest(&adminv1.CreatePolicyRequest{Name: "home",
		Sources: []string{"home"}, Destinations: []string{"home"}, Bidirectional: true})))
	must[adminv1.DeletePolicyResponse](t)(h.Admin.DeletePolicy(ctx, connect.NewRequest(&adminv1.DeletePolicyRequest{Id: "Default"})))
	must[adminv1.Route](t)(h.Admin.CreateRoute(ctx, connect.NewRequest(&adminv1.CreateRouteRequest{Network: "192.168.1.0/24",
		Peers: []string{"gw"}, Masquerade: true, Description: "home lan"})))
	must[adminv1.NameserverGroup](t)(h.Admin.CreateNameserverGroup(ctx, connect.NewRequest(&adminv1.CreateNameserverGroupRequest{
		Name: "lan", Nameservers: []string{"192.168.1.1"}, MatchDomains: []string{"home.arpa"}, Groups: []string{"home"}})))
	must[adminv1.DNSRecord](t)(h.Admin.CreateDNSRecord(ctx, connect.NewRequest(&adminv1.CreateDNSRecordRequest{
		Name: "nas", Type: "A", Value: "192.168.1.10"})))

	hasDNS := func(m *controltest.Map) bool { return m.Dns != nil && len(m.Dns.Records) == 1 }
	laptop := as[0].WaitFor(t, "route", func(m *controltest.Map) bool { return settled("gw")(m) && len(m.Routes) == 1 && hasDNS(m) })
	gw := as[1].WaitFor(t, "own route", func(m *controltest.Map) bool { return settled("laptop")(m) && len(m.Routes) == 1 && hasDNS(m) })
	phone := as[2].WaitFor(t, "nothing", func(m *controltest.Map) bool { return settled()(m) && hasDNS(m) })
	if r := laptop.Routes[0]; r.PeerPublicKey != gw.Self.PublicKey || !slices.Contains(laptop.Peers[0].AllowedIps, "192.168.1.0/24") {
		t.Fatalf("laptop route %v via allowed %v", r, laptop.Peers[0].AllowedIps)
	}
	if r := gw.Routes[0]; r.PeerPublicKey != gw.Self.PublicKey || !r.Masquerade {
		t.Fatalf("gw route %v", r)
	}
	if len(phone.Routes) != 0 || len(phone.Dns.NameserverGroups) != 0 || len(laptop.Dns.NameserverGroups) != 1 {
		t.Fatalf("phone routes %v ns %v; laptop ns %v", phone.Routes, phone.Dns.NameserverGroups, laptop.Dns.NameserverGroups)
	}
	golden(t, renderMaps(as...))
}
