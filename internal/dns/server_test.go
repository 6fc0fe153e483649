package dns

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
	"go.uber.org/goleak"
	"go.uber.org/zap/zaptest"

	controlv1 "meshd/api/control/v1"
	"meshd/internal/dns/dnstest"
	"meshd/internal/testutil"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// testMap is a map as control sends it: self, two peers, records and
// nameserver groups pointing at the given upstreams.
func testMap(groups ...*controlv1.NameserverGroup) *controlv1.NetworkMap {
	return &controlv1.NetworkMap{
		Serial: 7,
		Self:   &controlv1.SelfConfig{Name: "laptop", DnsName: "laptop.meshd.internal", OverlayIp: "100.64.0.1", OverlayNetwork: "100.64.0.0/16"},
		Peers: []*controlv1.RemotePeer{
			{Name: "nas", DnsName: "nas.meshd.internal", OverlayIp: "100.64.0.2", AllowedIps: []string{"100.64.0.2/32"}},
			{Name: "gw", DnsName: "gw.meshd.internal", OverlayIp: "100.64.0.3", AllowedIps: []string{"100.64.0.3/32", "192.168.1.0/24"}},
		},
		Dns: &controlv1.DNSConfig{
			Domain:           "meshd.internal",
			NameserverGroups: groups,
			Records: []*controlv1.DNSRecord{
				{Name: "printer", Type: "A", Value: "192.168.1.20", Ttl: 120},
				{Name: "files", Type: "CNAME", Value: "nas.meshd.internal"},
				{Name: "info", Type: "TXT", Value: "hello mesh"},
				{Name: "*.apps", Type: "A", Value: "192.168.1.30"},
				{Name: "wiki.home.arpa", Type: "A", Value: "192.168.1.40"},
				{Name: "v6", Type: "AAAA", Value: "fd00::1"},
			},
		},
	}
}

// server starts a resolver on loopback with the map's configuration.
func server(tb testing.TB, m *controlv1.NetworkMap, opts Options) (*Server, netip.AddrPort) {
	tb.Helper()
	if opts.Log == nil {
		opts.Log = zaptest.NewLogger(tb)
	}
	if opts.Allowed == nil {
		opts.Allowed = []netip.Prefix{netip.MustParsePrefix("100.64.0.0/16")}
	}
	if opts.System == nil {
		opts.System = []netip.AddrPort{} // no fallback unless the test gives one
	}
	s := New(opts)
	c, err := FromMap(m)
	if err != nil {
		tb.Fatal(err)
	}
	s.SetConfig(c)
	addr, err := s.Listen(netip.MustParseAddrPort("127.0.0.1:0"))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { s.Close() })
	return s, addr
}

// ask sends one query over UDP (or TCP) and returns the answer.
func ask(tb testing.TB, addr netip.AddrPort, name string, qtype uint16, network ...string) *mdns.Msg {
	tb.Helper()
	m := new(mdns.Msg)
	m.SetQuestion(mdns.Fqdn(name), qtype)
	c := &mdns.Client{Timeout: 5 * time.Second}
	if len(network) > 0 {
		c.Net = network[0]
	}
	resp, _, err := c.Exchange(m, addr.String())
	if err != nil {
		tb.Fatalf("query %s %s: %v", name, mdns.TypeToString[qtype], err)
	}
	return resp
}

// answers renders the answer section as "name type value" lines.
func answers(m *mdns.Msg) []string {
	var out []string
	for _, rr := range m.Answer {
		f := strings.Fields(rr.String())
		out = append(out, strings.ToLower(f[0])+" "+f[3]+" "+strings.Join(f[4:], " "))
	}
	return out
}

func TestAnswersMeshNames(t *testing.T) {
	_, addr := server(t, testMap(), Options{})
	for _, c := range []struct {
		name  string
		qtype uint16
		rcode int
		want  []string
	}{
		{"laptop.meshd.internal", mdns.TypeA, mdns.RcodeSuccess, []string{"laptop.meshd.internal. A 100.64.0.1"}},
		{"NAS.Meshd.Internal", mdns.TypeA, mdns.RcodeSuccess, []string{"nas.meshd.internal. A 100.64.0.2"}},
		{"gw.meshd.internal", mdns.TypeA, mdns.RcodeSuccess, []string{"gw.meshd.internal. A 100.64.0.3"}},
		{"gw.meshd.internal", mdns.TypeAAAA, mdns.RcodeSuccess, nil}, // NODATA
		{"ghost.meshd.internal", mdns.TypeA, mdns.RcodeNameError, nil},
		{"printer.meshd.internal", mdns.TypeA, mdns.RcodeSuccess, []string{"printer.meshd.internal. A 192.168.1.20"}},
		{"files.meshd.internal", mdns.TypeA, mdns.RcodeSuccess, []string{"files.meshd.internal. CNAME nas.meshd.internal.", "nas.meshd.internal. A 100.64.0.2"}},
		{"info.meshd.internal", mdns.TypeTXT, mdns.RcodeSuccess, []string{`info.meshd.internal. TXT "hello mesh"`}},
		{"x.apps.meshd.internal", mdns.TypeA, mdns.RcodeSuccess, []string{"x.apps.meshd.internal. A 192.168.1.30"}},
		{"wiki.home.arpa", mdns.TypeA, mdns.RcodeSuccess, []string{"wiki.home.arpa. A 192.168.1.40"}},
		{"wiki.home.arpa.meshd.internal", mdns.TypeA, mdns.RcodeSuccess, []string{"wiki.home.arpa.meshd.internal. A 192.168.1.40"}},
		{"v6.meshd.internal", mdns.TypeAAAA, mdns.RcodeSuccess, []string{"v6.meshd.internal. AAAA fd00::1"}},
		{"2.0.64.100.in-addr.arpa", mdns.TypePTR, mdns.RcodeSuccess, []string{"2.0.64.100.in-addr.arpa. PTR nas.meshd.internal."}},
		{"9.0.64.100.in-addr.arpa", mdns.TypePTR, mdns.RcodeNameError, nil},
	} {
		resp := ask(t, addr, c.name, c.qtype)
		if resp.Rcode != c.rcode || !slices.Equal(answers(resp), c.want) {
			t.Errorf("%s %s: rcode %s answers %q, want %s %q", c.name, mdns.TypeToString[c.qtype],
				mdns.RcodeToString[resp.Rcode], answers(resp), mdns.RcodeToString[c.rcode], c.want)
		}
		if !resp.Authoritative {
			t.Errorf("%s: a mesh answer must be authoritative", c.name)
		}
		if len(resp.Answer) == 0 && (len(resp.Ns) != 1 || resp.Ns[0].Header().Rrtype != mdns.TypeSOA) {
			t.Errorf("%s: a negative answer carries the zone's SOA, got %v", c.name, resp.Ns)
		}
	}
	// TCP answers as well.
	if got := answers(ask(t, addr, "nas.meshd.internal", mdns.TypeA, "tcp")); !slices.Equal(got, []string{"nas.meshd.internal. A 100.64.0.2"}) {
		t.Errorf("over tcp: %q", got)
	}
}

func TestForwardsByMatchDomain(t *testing.T) {
	dflt := dnstest.Start(t, map[string]string{"example.com": "192.0.2.1"})
	home := dnstest.Start(t, map[string]string{"router.home.arpa": "192.168.1.1"})
	lab := dnstest.Start(t, map[string]string{"box.lab.home.arpa": "192.168.2.9"})
	corp := dnstest.Start(t, map[string]string{"git.corp.meshd.internal": "10.1.1.1"})
	m := testMap(
		&controlv1.NameserverGroup{Name: "default", Nameservers: []string{dflt.Addr.String()}},
		&controlv1.NameserverGroup{Name: "home", Nameservers: []string{home.Addr.String()}, MatchDomains: []string{"home.arpa"}},
		&controlv1.NameserverGroup{Name: "lab", Nameservers: []string{lab.Addr.String()}, MatchDomains: []string{"lab.home.arpa."}},
		&controlv1.NameserverGroup{Name: "corp", Nameservers: []string{corp.Addr.String()}, MatchDomains: []string{"corp.meshd.internal"}},
	)
	_, addr := server(t, m, Options{})
	for _, c := range []struct {
		name string
		want []string
		by   *dnstest.Upstream
	}{
		{"example.com", []string{"example.com. A 192.0.2.1"}, dflt},
		{"router.home.arpa", []string{"router.home.arpa. A 192.168.1.1"}, home},
		{"box.lab.home.arpa", []string{"box.lab.home.arpa. A 192.168.2.9"}, lab},
		{"git.corp.meshd.internal", []string{"git.corp.meshd.internal. A 10.1.1.1"}, corp},
	} {
		resp := ask(t, addr, c.name, mdns.TypeA)
		if got := answers(resp); !slices.Equal(got, c.want) {
			t.Errorf("%s: %q, want %q", c.name, got, c.want)
		}
		if !slices.Contains(c.by.Asked(), mdns.Fqdn(c.name)) {
			t.Errorf("%s was not forwarded to its group's server", c.name)
		}
	}
	// Each upstream saw only its own names: the longest match won.
	if got := lab.Asked(); !slices.Equal(got, []string{"box.lab.home.arpa."}) {
		t.Errorf("lab was asked %q", got)
	}
	if got := home.Asked(); !slices.Equal(got, []string{"router.home.arpa."}) {
		t.Errorf("home was asked %q", got)
	}
	// The mesh's own names never leave the machine.
	ask(t, addr, "nas.meshd.internal", mdns.TypeA)
	ask(t, addr, "ghost.meshd.internal", mdns.TypeA)
	for _, u := range []*dnstest.Upstream{dflt, home, lab, corp} {
		for _, n := range u.Asked() {
			if n == "nas.meshd.internal." || n == "ghost.meshd.internal." {
				t.Errorf("mesh name %s was forwarded", n)
			}
		}
	}
	// An upstream's NXDOMAIN is passed on as is.
	if resp := ask(t, addr, "nothing.example.org", mdns.TypeA); resp.Rcode != mdns.RcodeNameError {
		t.Errorf("upstream NXDOMAIN became %s", mdns.RcodeToString[resp.Rcode])
	}
}

func TestFallsBackToTheSystemResolver(t *testing.T) {
	dead := dnstest.Start(t, nil)
	dead.Silence()
	system := dnstest.Start(t, map[string]string{"router.home.arpa": "192.168.1.1", "example.com": "192.0.2.7"})
	m := testMap(&controlv1.NameserverGroup{Name: "home", Nameservers: []string{dead.Addr.String()}, MatchDomains: []string{"home.arpa"}})
	_, addr := server(t, m, Options{System: []netip.AddrPort{system.Addr}, Timeout: 200 * time.Millisecond})
	// No group matches and there is no default group: the system resolver.
	if got := answers(ask(t, addr, "example.com", mdns.TypeA)); !slices.Equal(got, []string{"example.com. A 192.0.2.7"}) {
		t.Errorf("example.com: %q", got)
	}
	// The group's server is dead: the system resolver answers after the timeout.
	if got := answers(ask(t, addr, "router.home.arpa", mdns.TypeA)); !slices.Equal(got, []string{"router.home.arpa. A 192.168.1.1"}) {
		t.Errorf("router.home.arpa: %q", got)
	}
	if !slices.Contains(dead.Asked(), "router.home.arpa.") {
		t.Error("the group's server was not tried first")
	}
}

// TestNoFallbackInsideTheMeshDomain: with systemd-resolved as the system
// resolver, a mesh-domain name sent there would come straight back.
func TestNoFallbackInsideTheMeshDomain(t *testing.T) {
	dead := dnstest.Start(t, nil)
	dead.Silence()
	system := dnstest.Start(t, map[string]string{"git.corp.meshd.internal": "192.0.2.9"})
	m := testMap(&controlv1.NameserverGroup{Name: "corp", Nameservers: []string{dead.Addr.String()}, MatchDomains: []string{"corp.meshd.internal"}})
	_, addr := server(t, m, Options{System: []netip.AddrPort{system.Addr}, Timeout: 100 * time.Millisecond})
	if resp := ask(t, addr, "git.corp.meshd.internal", mdns.TypeA); resp.Rcode != mdns.RcodeServerFailure {
		t.Errorf("rcode %s answers %q, want SERVFAIL", mdns.RcodeToString[resp.Rcode], answers(resp))
	}
	if got := system.Asked(); len(got) != 0 {
		t.Errorf("the system resolver was asked %q", got)
	}
}

func TestSystemResolverFromResolvConf(t *testing.T) {
	path := filepath.Join(t.TempDir(), "resolv.conf")
	writeFile(t, path, "# test\nnameserver 127.0.0.1\nnameserver ::1\nsearch example.org\n")
	r := &systemResolvers{path: path}
	want := []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:53"), netip.MustParseAddrPort("[::1]:53")}
	if got := r.servers(); !slices.Equal(got, want) {
		t.Fatalf("servers %v, want %v", got, want)
	}
	// A changed file (new modification time) is read again.
	writeFile(t, path, "nameserver 192.0.2.53\n")
	later := time.Now().Add(time.Minute)
	if err := os.Chtimes(path, later, later); err != nil {
		t.Fatal(err)
	}
	if got := r.servers(); !slices.Equal(got, []netip.AddrPort{netip.MustParseAddrPort("192.0.2.53:53")}) {
		t.Fatalf("after the change: %v", got)
	}
}

func writeFile(tb testing.TB, path, content string) {
	tb.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		tb.Fatal(err)
	}
}

func TestTimesOutCleanly(t *testing.T) {
	dead := dnstest.Start(t, nil)
	dead.Silence()
	m := testMap(&controlv1.NameserverGroup{Name: "default", Nameservers: []string{dead.Addr.String(), dead.Addr.String()}})
	_, addr := server(t, m, Options{Timeout: 100 * time.Millisecond})
	start := time.Now()
	resp := ask(t, addr, "example.com", mdns.TypeA) // the client waits up to 5 s
	if resp.Rcode != mdns.RcodeServerFailure {
		t.Fatalf("rcode %s, want SERVFAIL", mdns.RcodeToString[resp.Rcode])
	}
	if n := len(dead.Asked()); n != 2 {
		t.Errorf("the dead server was asked %d times, want once per listed server", n)
	}
	t.Logf("SERVFAIL after %v", time.Since(start))
}

func TestRefusesClientsOutsideTheMesh(t *testing.T) {
	up := dnstest.Start(t, map[string]string{"example.com": "192.0.2.1"})
	m := testMap(&controlv1.NameserverGroup{Name: "default", Nameservers: []string{up.Addr.String()}})
	s, _ := server(t, m, Options{})
	q := new(mdns.Msg)
	q.SetQuestion("example.com.", mdns.TypeA)
	for _, c := range []struct {
		src   string
		rcode int
	}{
		{"192.0.2.99", mdns.RcodeRefused},
		{"10.0.0.5", mdns.RcodeRefused},
		{"100.65.0.1", mdns.RcodeRefused}, // CGNAT, but not our overlay
		{"100.64.0.2", mdns.RcodeSuccess},
		{"127.0.0.1", mdns.RcodeSuccess},
	} {
		resp := s.Resolve(context.Background(), q, netip.MustParseAddr(c.src))
		if resp.Rcode != c.rcode {
			t.Errorf("from %s: %s, want %s", c.src, mdns.RcodeToString[resp.Rcode], mdns.RcodeToString[c.rcode])
		}
	}
	if got := up.Asked(); len(got) != 2 {
		t.Errorf("upstream asked %d times, want 2 (the refused queries go nowhere)", len(got))
	}
	mq := new(mdns.Msg)
	mq.SetQuestion("nas.meshd.internal.", mdns.TypeA)
	if resp := s.Resolve(context.Background(), mq, netip.MustParseAddr("192.0.2.99")); resp.Rcode != mdns.RcodeRefused || len(resp.Answer) != 0 {
		t.Errorf("mesh names leaked to an outsider: %v", resp)
	}
}

func TestUpdatesWhenTheMapChanges(t *testing.T) {
	s, addr := server(t, testMap(), Options{})
	if got := answers(ask(t, addr, "nas.meshd.internal", mdns.TypeA)); len(got) != 1 {
		t.Fatalf("before: %q", got)
	}
	m := testMap()
	m.Peers = append(m.Peers[1:], &controlv1.RemotePeer{Name: "phone", DnsName: "phone.meshd.internal", OverlayIp: "100.64.0.9"})
	m.Dns.Records = nil
	c, err := FromMap(m)
	if err != nil {
		t.Fatal(err)
	}
	s.SetConfig(c)
	if resp := ask(t, addr, "nas.meshd.internal", mdns.TypeA); resp.Rcode != mdns.RcodeNameError {
		t.Errorf("removed peer: %s %q", mdns.RcodeToString[resp.Rcode], answers(resp))
	}
	if got := answers(ask(t, addr, "phone.meshd.internal", mdns.TypeA)); !slices.Equal(got, []string{"phone.meshd.internal. A 100.64.0.9"}) {
		t.Errorf("new peer: %q", got)
	}
	if resp := ask(t, addr, "printer.meshd.internal", mdns.TypeA); resp.Rcode != mdns.RcodeNameError {
		t.Errorf("removed record still answered: %q", answers(resp))
	}
	// A new domain moves every name.
	m.Dns.Domain = "home.lan"
	m.Self.DnsName, m.Peers[0].DnsName = "laptop.home.lan", "gw.home.lan"
	c, _ = FromMap(m)
	s.SetConfig(c)
	if got := answers(ask(t, addr, "gw.home.lan", mdns.TypeA)); !slices.Equal(got, []string{"gw.home.lan. A 100.64.0.3"}) {
		t.Errorf("new domain: %q", got)
	}
}

func TestFromMapReportsBadEntries(t *testing.T) {
	m := testMap(&controlv1.NameserverGroup{Name: "bad", Nameservers: []string{"not-an-ip", "192.0.2.53", "[fd00::53]:5353"}})
	m.Peers = append(m.Peers, &controlv1.RemotePeer{Name: "odd", DnsName: "odd.meshd.internal", OverlayIp: "garbage"})
	c, err := FromMap(m)
	if err == nil || !strings.Contains(err.Error(), "not-an-ip") || !strings.Contains(err.Error(), "odd") {
		t.Errorf("error %v: want the bad nameserver and the bad peer named", err)
	}
	if len(c.Groups) != 1 || !slices.Equal(c.Groups[0].Servers, []netip.AddrPort{netip.MustParseAddrPort("192.0.2.53:53"), netip.MustParseAddrPort("[fd00::53]:5353")}) {
		t.Errorf("the good servers must still apply: %+v", c.Groups)
	}
	if len(c.Hosts) != 3 || c.Overlay != netip.MustParsePrefix("100.64.0.0/16") || c.Domain != "meshd.internal." {
		t.Errorf("config %+v", c)
	}
}

func TestCloseEndsQueriesInFlight(t *testing.T) {
	dead := dnstest.Start(t, nil)
	dead.Silence()
	m := testMap(&controlv1.NameserverGroup{Name: "default", Nameservers: []string{dead.Addr.String()}})
	s, addr := server(t, m, Options{Timeout: time.Minute})
	done := make(chan struct{})
	go func() {
		defer close(done)
		q := new(mdns.Msg)
		q.SetQuestion("example.com.", mdns.TypeA)
		(&mdns.Client{Timeout: 2 * time.Second}).Exchange(q, addr.String())
	}()
	testutil.WaitFor(t, 5*time.Second, "the query to reach the upstream", func() bool { return len(dead.Asked()) > 0 })
	closed := make(chan struct{})
	go func() { s.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("Close waited for the upstream's one-minute timeout")
	}
	<-done
	if _, err := s.Listen(netip.MustParseAddrPort("127.0.0.1:0")); err == nil {
		t.Error("Listen after Close succeeded")
	}
}
