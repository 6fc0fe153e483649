package relay_test

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pion/stun/v2"
	"go.uber.org/goleak"
	"go.uber.org/zap/zaptest"

	"meshd/internal/testutil"
	"meshd/internal/tlsconf"
	"meshd/internal/turncred"
	"meshd/nat/relay"
	"meshd/nat/relay/relaytest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var testSecret = []byte("relay-test-secret")

// startRelay runs a relay on loopback and closes it in cleanup.
func startRelay(tb testing.TB, mod func(*relay.Options)) *relay.Server {
	tb.Helper()
	opts := relay.Options{
		Log:        zaptest.NewLogger(tb),
		Secret:     testSecret,
		PublicIP:   netip.MustParseAddr("127.0.0.1"),
		ListenAddr: "127.0.0.1:0",
		Workers:    2,
	}
	if mod != nil {
		mod(&opts)
	}
	s, err := relay.New(opts)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := s.Close(); err != nil {
			tb.Errorf("close relay: %v", err)
		}
	})
	return s
}

func cred(id string) turncred.Credential {
	return relaytest.Credential(testSecret, id, time.Hour)
}

func mustAllocate(tb testing.TB, addr, transport string, c turncred.Credential, tc *tls.Config) *relaytest.Allocation {
	tb.Helper()
	a, err := relaytest.Allocate(tb, addr, transport, c, tc)
	if err != nil {
		tb.Fatalf("allocate over %s at %s: %v", transport, addr, err)
	}
	return a
}

// scrape returns the value of one metric line ("name{labels}") of h.
func scrape(tb testing.TB, h http.Handler, series string) float64 {
	tb.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	sc := bufio.NewScanner(rec.Body)
	for sc.Scan() {
		name, val, ok := strings.Cut(sc.Text(), " ")
		if ok && name == series {
			f, err := strconv.ParseFloat(val, 64)
			if err != nil {
				tb.Fatalf("metric %s: %v", series, err)
			}
			return f
		}
	}
	tb.Fatalf("metric %s not served", series)
	return 0
}

func TestSTUNBinding(t *testing.T) {
	s := startRelay(t, nil)
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	req := stun.MustBuild(stun.TransactionID, stun.BindingRequest)
	if _, err := conn.WriteToUDPAddrPort(req.Raw, s.UDPAddr()); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 1500)
	n, err := conn.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	m := &stun.Message{Raw: buf[:n]}
	if err := m.Decode(); err != nil {
		t.Fatal(err)
	}
	var xor stun.XORMappedAddress
	if err := xor.GetFrom(m); err != nil {
		t.Fatal(err)
	}
	if got, want := xor.String(), conn.LocalAddr().String(); got != want {
		t.Fatalf("mapped address %s, want %s", got, want)
	}
}

// TestRelay allocates over each client transport, relays 1280-byte
// packets to an allocation over UDP and back, and checks the counters.
func TestRelay(t *testing.T) {
	for _, transport := range []string{relaytest.UDP, relaytest.TCP, relaytest.TLS} {
		t.Run(transport, func(t *testing.T) {
			var tlsAddr string
			s := startRelay(t, func(o *relay.Options) {
				if transport != relaytest.TLS {
					return
				}
				ln, err := net.Listen("tcp4", "127.0.0.1:0")
				if err != nil {
					t.Fatal(err)
				}
				o.TLSListener = relay.TURNOverTLS(ln, serverTLS(t))
				tlsAddr = ln.Addr().String()
			})
			addr := s.UDPAddr().String()
			if transport == relaytest.TCP {
				addr = s.TCPAddr().String()
			}
			if transport == relaytest.TLS {
				addr = tlsAddr
			}
			a := mustAllocate(t, addr, transport, cred("peer-a"), &tls.Config{InsecureSkipVerify: true})
			b := mustAllocate(t, s.UDPAddr().String(), relaytest.UDP, cred("peer-b"), nil)
			if a.RelayAddr().IP.String() != "127.0.0.1" {
				t.Fatalf("relayed address %s not on the public IP", a.RelayAddr())
			}

			const n, size = 200, 1280
			if got := relaytest.Exchange(t, a, b, n, size); got != n*size {
				t.Fatalf("b got %d bytes, want %d", got, n*size)
			}
			if got := relaytest.Exchange(t, b, a, n, size); got != n*size {
				t.Fatalf("a got %d bytes, want %d", got, n*size)
			}
			// ChannelData over TCP is padded to 4 bytes; odd sizes must
			// arrive unpadded.
			if got := relaytest.Exchange(t, a, b, 20, 1001); got != 20*1001 {
				t.Fatalf("b got %d bytes of odd-sized packets", got)
			}
			if got := relaytest.Exchange(t, b, a, 20, 1001); got != 20*1001 {
				t.Fatalf("a got %d bytes of odd-sized packets", got)
			}

			st := s.Stats()
			if st.Allocations != 2 || st.AllocationsByTransport[transport] < 1 || st.Users != 2 {
				t.Fatalf("stats %+v: want 2 allocations (one over %s) by 2 users", st, transport)
			}
			// Each direction crosses the relay twice (client to a's relay
			// socket to b's relay socket), so both counters see both ways.
			// (A packet is counted just after it was passed on.)
			testutil.WaitFor(t, 10*time.Second, "the byte counters", func() bool {
				st = s.Stats()
				return st.BytesToPeers >= 2*n*size && st.BytesFromPeers >= 2*n*size
			})
			h := s.Metrics()
			if v := scrape(t, h, `meshd_relay_stun_messages_total{method="channel_bind"}`); v < 2 {
				t.Fatalf("%v channel binds: pion's client should have bound channels", v)
			}
			if v := scrape(t, h, `meshd_relay_bytes_total{direction="to_peer"}`); v < float64(2*n*size) {
				t.Fatalf("metric bytes to peers %v", v)
			}
			if v := scrape(t, h, `meshd_relay_allocations{transport="`+transport+`"}`); v < 1 {
				t.Fatalf("metric allocations over %s: %v", transport, v)
			}
			if transport != relaytest.UDP {
				if v := scrape(t, h, `meshd_relay_connections{transport="`+transport+`"}`); v != 1 {
					t.Fatalf("metric connections over %s: %v, want 1", transport, v)
				}
			}

			// Closing a's connection or allocation frees it on the server.
			a.Close()
			testutil.WaitFor(t, 10*time.Second, "a's allocation to end", func() bool { return s.Stats().Allocations == 1 })
		})
	}
}

// TestRelayToPlainPeer relays between an allocation and a peer that is a
// plain UDP socket (a peer reached on its server-reflexive address), the
// path through the kernel rather than between two relay sockets. The peer
// is on loopback, which the policy refuses unless allowed, and not on the
// relay's own address, where only relayed addresses are peers.
func TestRelayToPlainPeer(t *testing.T) {
	s := startRelay(t, func(o *relay.Options) { o.AllowPeers = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")} })
	a := mustAllocate(t, s.UDPAddr().String(), relaytest.UDP, cred("a"), nil)
	peer, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 2)})
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	buf := make([]byte, 2048)
	const n = 50
	got := 0
	for i := 0; i < 500 && got < n; i++ {
		msg := []byte("to peer " + strconv.Itoa(i))
		if _, err := a.Relay.WriteTo(msg, peer.LocalAddr()); err != nil {
			t.Fatal(err)
		}
		_ = peer.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		m, from, err := peer.ReadFromUDP(buf)
		if err != nil {
			continue // the first packets may race the permission
		}
		if from.String() != a.RelayAddr().String() || string(buf[:m]) != string(msg) {
			t.Fatalf("peer got %q from %s, want %q from %s", buf[:m], from, msg, a.RelayAddr())
		}
		reply := []byte("from peer " + strconv.Itoa(i))
		if _, err := peer.WriteToUDP(reply, a.RelayAddr()); err != nil {
			t.Fatal(err)
		}
		_ = a.Relay.SetReadDeadline(time.Now().Add(5 * time.Second))
		m, back, err := a.Relay.ReadFrom(buf)
		if err != nil {
			t.Fatalf("reply %d: %v", i, err)
		}
		if back.String() != peer.LocalAddr().String() || string(buf[:m]) != string(reply) {
			t.Fatalf("client got %q from %s, want %q from %s", buf[:m], back, reply, peer.LocalAddr())
		}
		got++
	}
	if got < n {
		t.Fatalf("%d of %d round trips", got, n)
	}
	// A burst (queued for the peer and sent in batches): all of it, in
	// order, intact. (The peer's buffer must hold it: nobody paces.)
	if err := peer.SetReadBuffer(4 << 20); err != nil {
		t.Fatal(err)
	}
	const burst = 300
	for i := 0; i < burst; i++ {
		pkt := bytes.Repeat([]byte{byte(i)}, 1280)
		pkt[0], pkt[1] = byte(i>>8), byte(i)
		if _, err := a.Relay.WriteTo(pkt, peer.LocalAddr()); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < burst; i++ {
		_ = peer.SetReadDeadline(time.Now().Add(5 * time.Second))
		m, _, err := peer.ReadFromUDP(buf)
		if err != nil {
			t.Fatalf("burst packet %d: %v", i, err)
		}
		if m != 1280 || int(buf[0])<<8|int(buf[1]) != i || buf[m-1] != byte(i) {
			t.Fatalf("burst packet %d: %d bytes, number %d", i, m, int(buf[0])<<8|int(buf[1]))
		}
	}
	// The relay counts a packet after its send returned, which may be
	// after the peer has it.
	testutil.WaitFor(t, 10*time.Second, "the relay to count the packets", func() bool {
		st := s.Stats()
		return st.PacketsToPeers >= n && st.PacketsFromPeers >= n
	})
}

// TestDualStack serves on the default kind of address (all addresses,
// IPv6 socket taking IPv4 too) and relays IPv4 clients: the batched
// sends then go to IPv4-mapped addresses on an IPv6 socket.
func TestDualStack(t *testing.T) {
	s := startRelay(t, func(o *relay.Options) { o.ListenAddr = "[::]:0" })
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(int(s.UDPAddr().Port())))
	a := mustAllocate(t, addr, relaytest.UDP, cred("a"), nil)
	b := mustAllocate(t, addr, relaytest.UDP, cred("b"), nil)
	if got := relaytest.Exchange(t, a, b, 200, 1280); got != 200*1280 {
		t.Fatalf("got %d bytes", got)
	}
	st := s.Stats()
	t.Logf("%d packets in %d batched sends", st.BatchedPackets, st.BatchedSends)
}

func TestCredentials(t *testing.T) {
	s := startRelay(t, nil)
	addr := s.UDPAddr().String()
	now := time.Now()
	cases := []struct {
		name   string
		cred   turncred.Credential
		reason string // in Stats().AuthRefused, "" for an integrity failure
	}{
		{"expired", turncred.Issue(testSecret, "peer", now.Add(-2*time.Hour), time.Hour), "expired"},
		{"forged", turncred.Credential{Username: cred("peer").Username, Password: "bm90IHRoZSBwYXNzd29yZA=="}, ""},
		{"other secret", turncred.Issue([]byte("another-secret"), "peer", now, time.Hour), ""},
		{"malformed", turncred.Credential{Username: "peer", Password: turncred.Password(testSecret, "peer")}, "malformed"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := s.Stats()
			a, err := relaytest.Allocate(t, addr, relaytest.UDP, tc.cred, nil)
			if err == nil {
				a.Close()
				t.Fatal("allocation succeeded with a bad credential")
			}
			after := s.Stats()
			if tc.reason != "" && after.AuthRefused[tc.reason] <= before.AuthRefused[tc.reason] {
				t.Fatalf("auth refusals %v, want one more %q", after.AuthRefused, tc.reason)
			}
			if tc.reason == "" && after.ErrorResponses[400] <= before.ErrorResponses[400] {
				t.Fatalf("error responses %v: want a 400 for the failed integrity check", after.ErrorResponses)
			}
			if after.Allocations != 0 {
				t.Fatalf("%d allocations after a refused credential", after.Allocations)
			}
		})
	}
	// A good credential still works, under a secret that rotated in.
	mustAllocate(t, addr, relaytest.UDP, cred("peer"), nil)
}

func TestSecretFunc(t *testing.T) {
	secret := []byte("first")
	s := startRelay(t, func(o *relay.Options) {
		o.Secret = nil
		o.SecretFunc = func() []byte { return secret }
	})
	mustAllocate(t, s.UDPAddr().String(), relaytest.UDP, turncred.Issue(secret, "a", time.Now(), time.Hour), nil)
}

func TestQuota(t *testing.T) {
	s := startRelay(t, func(o *relay.Options) { o.MaxAllocationsPerUser = 2 })
	addr := s.UDPAddr().String()
	a1 := mustAllocate(t, addr, relaytest.UDP, cred("greedy"), nil)
	mustAllocate(t, addr, relaytest.UDP, cred("greedy"), nil)
	_, err := relaytest.Allocate(t, addr, relaytest.UDP, cred("greedy"), nil)
	if err == nil || !strings.Contains(err.Error(), "486") {
		t.Fatalf("third allocation: err = %v, want error 486 (Allocation Quota Reached)", err)
	}
	if st := s.Stats(); st.Refused["quota"] != 1 || st.ErrorResponses[486] != 1 {
		t.Fatalf("stats %+v: want one quota refusal answered 486", st)
	}
	// The quota is per credential id, not per username or address.
	mustAllocate(t, addr, relaytest.UDP, cred("modest"), nil)
	// A freed allocation makes room again.
	a1.Close()
	testutil.WaitFor(t, 10*time.Second, "the freed allocation", func() bool { return s.Stats().Allocations == 2 })
	mustAllocate(t, addr, relaytest.UDP, cred("greedy"), nil)
}

func TestMaxLifetime(t *testing.T) {
	s := startRelay(t, func(o *relay.Options) { o.MaxLifetime = 200 * time.Millisecond })
	mustAllocate(t, s.UDPAddr().String(), relaytest.UDP, cred("short"), nil)
	if s.Stats().AllocationsTotal != 1 {
		t.Fatal("no allocation")
	}
	testutil.WaitFor(t, 10*time.Second, "the allocation to reach its maximum lifetime", func() bool { return s.Stats().Allocations == 0 })
}

func TestCapacity(t *testing.T) {
	s := startRelay(t, func(o *relay.Options) { o.MaxAllocations = 1 })
	mustAllocate(t, s.UDPAddr().String(), relaytest.UDP, cred("a"), nil)
	if _, err := relaytest.Allocate(t, s.UDPAddr().String(), relaytest.UDP, cred("b"), nil); err == nil || !strings.Contains(err.Error(), "508") {
		t.Fatalf("err = %v, want 508 (Insufficient Capacity)", err)
	}
}

func TestPortRange(t *testing.T) {
	port := relaytest.FreePort(t)
	s := startRelay(t, func(o *relay.Options) { o.PortMin, o.PortMax = uint16(port), uint16(port) })
	a := mustAllocate(t, s.UDPAddr().String(), relaytest.UDP, cred("a"), nil)
	if a.RelayAddr().Port != port {
		t.Fatalf("relayed port %d, want %d", a.RelayAddr().Port, port)
	}
	// The range holds one port: the next allocation has none.
	if _, err := relaytest.Allocate(t, s.UDPAddr().String(), relaytest.UDP, cred("b"), nil); err == nil {
		t.Fatal("allocated beyond the port range")
	}
	if st := s.Stats(); st.Refused["ports"] != 1 {
		t.Fatalf("refusals %v, want one for ports", st.Refused)
	}
}

// TestHairpinAndPeerPolicy runs a relay whose public IP is not local (a
// VPS behind 1:1 NAT): relayed addresses carry the public IP, two relayed
// clients still reach each other, and loopback peers are refused.
func TestHairpinAndPeerPolicy(t *testing.T) {
	public := netip.MustParseAddr("192.0.2.7") // TEST-NET-1, never local
	s := startRelay(t, func(o *relay.Options) {
		o.PublicIP = public
		o.RelayBindIP = netip.MustParseAddr("127.0.0.1")
	})
	a := mustAllocate(t, s.UDPAddr().String(), relaytest.UDP, cred("a"), nil)
	b := mustAllocate(t, s.UDPAddr().String(), relaytest.UDP, cred("b"), nil)
	if got := a.RelayAddr().IP.String(); got != public.String() {
		t.Fatalf("relayed address on %s, want %s", got, public)
	}
	if got := relaytest.Exchange(t, a, b, 20, 1280); got != 20*1280 {
		t.Fatalf("got %d bytes", got)
	}
	peer, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	_, err = a.Relay.WriteTo([]byte("to loopback"), peer.LocalAddr())
	if err == nil {
		t.Fatal("permission to a loopback peer granted")
	}
	if s.Stats().PeersDenied == 0 {
		t.Fatal("no denied peer counted")
	}
}

func TestNewErrors(t *testing.T) {
	base := relay.Options{Secret: testSecret, PublicIP: netip.MustParseAddr("127.0.0.1"), ListenAddr: "127.0.0.1:0"}
	for name, mod := range map[string]func(*relay.Options){
		"no secret":    func(o *relay.Options) { o.Secret = nil },
		"no public ip": func(o *relay.Options) { o.PublicIP = netip.Addr{} },
		"ipv6 public":  func(o *relay.Options) { o.PublicIP = netip.MustParseAddr("2001:db8::1") },
		"bad range":    func(o *relay.Options) { o.PortMin, o.PortMax = 5000, 4000 },
		"bad listen":   func(o *relay.Options) { o.ListenAddr = "nonsense" },
	} {
		t.Run(name, func(t *testing.T) {
			o := base
			mod(&o)
			s, err := relay.New(o)
			if err == nil {
				s.Close()
				t.Fatal("New succeeded")
			}
		})
	}
}

func TestURLs(t *testing.T) {
	got := strings.Join(relay.URLs("relay.example", 3478, 443), " ")
	want := "stun:relay.example:3478 turn:relay.example:3478?transport=udp turn:relay.example:3478?transport=tcp turns:relay.example:443?transport=tcp"
	if got != want {
		t.Fatalf("URLs = %s\nwant   %s", got, want)
	}
}

// serverTLS is a self-signed server configuration in a temp dir.
func serverTLS(tb testing.TB) *tls.Config {
	tb.Helper()
	srv, err := tlsconf.ServerConfig(tlsconf.Options{DataDir: tb.TempDir(), Hosts: []string{"127.0.0.1"}})
	if err != nil {
		tb.Fatal(err)
	}
	return srv.Config
}
