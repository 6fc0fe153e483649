package agent

import (
	"context"
	"encoding/binary"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	mdns "github.com/miekg/dns"

	adminv1 "meshd/api/admin/v1"
	controlv1 "meshd/api/control/v1"
	daemonv1 "meshd/api/daemon/v1"
	"meshd/internal/filter"
	"meshd/internal/testutil"
	"meshd/wg"
)

// lookup asks the resolver at addr (over conn when given: a netstack
// socket into the tunnel) for name's A record.
func lookup(conn net.Conn, addr netip.AddrPort, name string) (*mdns.Msg, error) {
	q := new(mdns.Msg)
	q.SetQuestion(mdns.Fqdn(name), mdns.TypeA)
	c := &mdns.Client{Timeout: time.Second}
	if conn != nil {
		r, _, err := c.ExchangeWithConn(q, &mdns.Conn{Conn: conn})
		return r, err
	}
	r, _, err := c.Exchange(q, addr.String())
	return r, err
}

func aRecords(m *mdns.Msg) []string {
	var out []string
	for _, rr := range m.Answer {
		if a, ok := rr.(*mdns.A); ok {
			out = append(out, a.A.String())
		}
	}
	return out
}

func loopbackDNS(tb testing.TB, e *Engine) netip.AddrPort {
	tb.Helper()
	for _, a := range e.DNSAddrs() {
		if a.Addr().IsLoopback() {
			return a
		}
	}
	tb.Fatalf("no loopback resolver among %v", e.DNSAddrs())
	return netip.AddrPort{}
}

// TestMeshDNS: every agent resolves every peer's name, locally (loopback,
// netstack mode) and through the tunnel on a peer's overlay address, and
// follows the map when an admin adds a record.
func TestMeshDNS(t *testing.T) {
	w := newWorld(t)
	a, b := w.agent("dnsa"), w.agent("dnsb")
	da, ipa := waitUp(t, a)
	_, ipb := waitUp(t, b)
	nameA, nameB := a.Status().Self.DnsName, b.Status().Self.DnsName
	if nameB == "" || !strings.HasPrefix(nameB, "dnsb.") {
		t.Fatalf("b's dns name %q", nameB)
	}
	local := loopbackDNS(t, a)
	testutil.WaitFor(t, 10*time.Second, "a's resolver to know b", func() bool {
		r, err := lookup(nil, local, nameB)
		return err == nil && slices.Equal(aRecords(r), []string{ipb.String()})
	})
	if r, err := lookup(nil, local, nameA); err != nil || !slices.Equal(aRecords(r), []string{ipa.String()}) {
		t.Fatalf("a's own name: %v %v", r, err)
	}

	// Through the tunnel: a asks b's resolver on b's overlay address.
	waitPing(t, da, ipb, 15*time.Second)
	var got []string
	testutil.WaitFor(t, 10*time.Second, "b's resolver to answer through the tunnel", func() bool {
		conn, err := da.Net().DialUDPAddrPort(netip.AddrPort{}, netip.AddrPortFrom(ipb, 53))
		if err != nil {
			return false
		}
		defer conn.Close()
		r, err := lookup(conn, netip.AddrPort{}, nameA)
		if err != nil {
			return false
		}
		got = aRecords(r)
		return true
	})
	if !slices.Equal(got, []string{ipa.String()}) {
		t.Fatalf("b's resolver answered %v for %s, want %s", got, nameA, ipa)
	}

	// An admin adds a record: the map carries it to the resolvers.
	ctx := context.Background()
	if _, err := w.control.Admin.CreateDNSRecord(ctx, connect.NewRequest(&adminv1.CreateDNSRecordRequest{
		Name: "printer", Type: "A", Value: "192.168.1.20"})); err != nil {
		t.Fatal(err)
	}
	domain := strings.TrimPrefix(nameA, "dnsa.")
	testutil.WaitFor(t, 10*time.Second, "the new record", func() bool {
		r, err := lookup(nil, local, "printer."+domain)
		return err == nil && slices.Equal(aRecords(r), []string{"192.168.1.20"})
	})

	st := a.Status().Dns
	if st == nil || st.Domain != domain || st.Mode != "manual" || !slices.Contains(st.Addresses, local.String()) ||
		!slices.Contains(st.Addresses, netip.AddrPortFrom(ipa, 53).String()) {
		t.Errorf("dns status %v", st)
	}
}

// TestRoutingPeerInNetstackMode: a route through a netstack agent is
// reported as impossible there, and as used on the other agent; the
// routing peer's allowed IPs on the client grow by the network.
func TestRoutingPeerInNetstackMode(t *testing.T) {
	w := newWorld(t)
	a, r := w.agent("rta"), w.agent("rtr")
	waitUp(t, a)
	waitUp(t, r)
	ctx := context.Background()
	if _, err := w.control.Admin.CreateRoute(ctx, connect.NewRequest(&adminv1.CreateRouteRequest{
		Network: "10.99.0.0/24", Peers: []string{"rtr"}, Masquerade: true})); err != nil {
		t.Fatal(err)
	}
	routeOf := func(e *Engine) *daemonv1.RouteStatus {
		for _, rs := range e.Status().Routes {
			if rs.Network == "10.99.0.0/24" {
				return rs
			}
		}
		return nil
	}
	testutil.WaitFor(t, 10*time.Second, "the routing peer's status", func() bool { return routeOf(r) != nil })
	if rs := routeOf(r); rs.State != RouteUnsupported || !strings.Contains(rs.Message, "netstack") || rs.Via != "" || !rs.Masquerade {
		t.Errorf("routing peer's route %v", rs)
	}
	if r.Status().State != "up" {
		t.Errorf("the routing peer must keep running: %s %s", r.Status().State, r.Status().Message)
	}
	// Active once the tunnel to the routing peer is up (unreachable before).
	testutil.WaitFor(t, 10*time.Second, "the client's route active", func() bool { rs := routeOf(a); return rs != nil && rs.State == RouteActive })
	if rs := routeOf(a); rs.State != RouteActive || rs.Via != "rtr" || rs.ViaPublicKey != r.PublicKey().String() {
		t.Errorf("client's route %v", rs)
	}
	// Deleting the route removes it from both.
	if _, err := w.control.Admin.DeleteRoute(ctx, connect.NewRequest(&adminv1.DeleteRouteRequest{Id: "10.99.0.0/24"})); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, "the route gone", func() bool { return routeOf(a) == nil && routeOf(r) == nil })
}

// TestDNSOff: --dns=false starts no resolver and says so.
func TestDNSOff(t *testing.T) {
	w := newWorld(t)
	e, err := New(Options{
		StateDir: t.TempDir(), ControlURL: w.control.URL, Pin: w.pin, SetupKey: w.setupKey, Hostname: "nodns",
		Device: wg.Config{Mode: wg.ModeNetstack, Name: "nodns"}, Clients: RealClients(), IncludeLoopback: true,
		DNS: DNSOptions{Disabled: true},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); e.Run(ctx) }()
	defer func() { cancel(); <-done }()
	waitUp(t, e)
	if len(e.DNSAddrs()) != 0 {
		t.Errorf("resolver runs with DNS off: %v", e.DNSAddrs())
	}
	if st := e.Status().Dns; st == nil || st.Mode != "off" {
		t.Errorf("dns status %v", st)
	}
}

// packet builds an IPv4 TCP SYN from src to dst:dport.
func packet(src, dst string, dport uint16) []byte {
	b := make([]byte, 40)
	b[0], b[9] = 0x45, 6
	binary.BigEndian.PutUint16(b[2:], 40)
	s, d := netip.MustParseAddr(src).As4(), netip.MustParseAddr(dst).As4()
	copy(b[12:16], s[:])
	copy(b[16:20], d[:])
	binary.BigEndian.PutUint16(b[20:], 40000)
	binary.BigEndian.PutUint16(b[22:], dport)
	b[32] = 5 << 4
	b[33] = 0x02
	return b
}

// TestFirewallRulesForRoutedNetworks: the policy that lets this peer reach
// the routing peer on tcp/443 lets it reach the routed network on 443, and
// nothing else; without the derived rules the filter would drop it all.
func TestFirewallRulesForRoutedNetworks(t *testing.T) {
	m := &controlv1.NetworkMap{
		Self: &controlv1.SelfConfig{PublicKey: "SELF", OverlayIp: "100.64.0.1"},
		Peers: []*controlv1.RemotePeer{
			{PublicKey: "R", OverlayIp: "100.64.0.2", AllowedIps: []string{"100.64.0.2/32", "10.99.0.0/24"}},
			{PublicKey: "B", OverlayIp: "100.64.0.3", AllowedIps: []string{"100.64.0.3/32"}},
		},
		FirewallRules: []*controlv1.FirewallRule{
			{PeerIp: "100.64.0.2", Direction: controlv1.Direction_DIRECTION_OUT, Protocol: controlv1.Protocol_PROTOCOL_TCP,
				Ports: []*controlv1.PortRange{{Start: 443, End: 443}}},
			{PeerIp: "100.64.0.3", Direction: controlv1.Direction_DIRECTION_OUT, Protocol: controlv1.Protocol_PROTOCOL_ALL},
		},
		Routes: []*controlv1.Route{
			{Network: "10.99.0.0/24", PeerPublicKey: "R"},
			{Network: "10.50.0.0/16", PeerPublicKey: "SELF"}, // served here: no derived rule
		},
	}
	plain, err := filter.Compile(m.GetFirewallRules())
	if err != nil {
		t.Fatal(err)
	}
	if filter.New(plain).Allow(packet("100.64.0.1", "10.99.0.5", 443), false) {
		t.Fatal("the map's rules alone pass routed traffic: the derived rules are not needed any more")
	}
	rules, err := filter.Compile(firewallRules(m))
	if err != nil {
		t.Fatal(err)
	}
	f := filter.New(rules)
	for _, c := range []struct {
		dst  string
		port uint16
		want bool
	}{
		{"10.99.0.5", 443, true},  // routed, allowed port
		{"10.99.0.5", 22, false},  // routed, port the policy does not allow
		{"10.98.0.5", 443, false}, // not routed at all
		{"100.64.0.2", 443, true}, // the routing peer itself
		{"100.64.0.3", 22, true},  // another peer, all protocols
		{"10.50.0.9", 443, false}, // a network this peer serves is not a tunnel destination
	} {
		if got := f.Allow(packet("100.64.0.1", c.dst, c.port), false); got != c.want {
			t.Errorf("to %s:%d: allow=%v, want %v", c.dst, c.port, got, c.want)
		}
	}
	if n := len(firewallRules(m)) - len(m.GetFirewallRules()); n != 1 {
		t.Errorf("%d derived rules, want 1 (the routing peer's one rule, for its one network)", n)
	}
	// No rules at all: the filter accepts everything, and stays so.
	m.FirewallRules = nil
	if rs := firewallRules(m); len(rs) != 0 {
		t.Errorf("derived rules %v from a map without rules", rs)
	}
}
