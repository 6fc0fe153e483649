package peerconn

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"net"
	"net/netip"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/stun/v2"
	"go.uber.org/zap"

	"meshd/internal/testutil"
	"meshd/internal/tlsconf"
	"meshd/internal/turncred"
	"meshd/nat/relay"
)

var resignSecret = []byte("rotation secret")

func uri(c turncred.Credential) *stun.URI {
	return &stun.URI{Scheme: stun.SchemeTypeTURN, Host: "127.0.0.1", Port: 3478, Proto: stun.ProtoTypeUDP, Username: c.Username, Password: c.Password}
}

// pionRequest builds an authenticated request the way pion's TURN client
// does.
func pionRequest(t *testing.T, method stun.Method, c turncred.Credential) *stun.Message {
	t.Helper()
	var lifetime [4]byte
	binary.BigEndian.PutUint32(lifetime[:], 600)
	m, err := stun.Build(stun.TransactionID, stun.NewType(method, stun.ClassRequest),
		stun.RawAttribute{Type: stun.AttrLifetime, Value: lifetime[:]},
		stun.NewUsername(c.Username), stun.NewRealm("meshd"), stun.NewNonce("nonce-1"),
		stun.NewLongTermIntegrity(c.Username, "meshd", c.Password), stun.Fingerprint)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// Every authenticated TURN request pion sends is signed again with the
// newest credential of its id: the server's check with the new key passes,
// the rest of the request is kept.
func TestResignTURNRequests(t *testing.T) {
	now := time.Now()
	old := turncred.Issue(resignSecret, "peer1", now, time.Minute)
	cur := turncred.Issue(resignSecret, "peer1", now.Add(30*time.Second), time.Minute)
	var c turnCreds
	c.set([]*stun.URI{uri(old)})
	c.set([]*stun.URI{uri(cur)})
	c.set([]*stun.URI{uri(old)}) // an older map's credential does not win
	for _, method := range []stun.Method{stun.MethodAllocate, stun.MethodRefresh, stun.MethodCreatePermission, stun.MethodChannelBind} {
		m := pionRequest(t, method, old)
		orig := append([]byte(nil), m.Raw...)
		out := c.resign(m.Raw)
		if !bytes.Equal(m.Raw, orig) {
			t.Fatalf("%v: the original was modified", method)
		}
		got := &stun.Message{Raw: out}
		if err := got.Decode(); err != nil {
			t.Fatalf("%v: %v", method, err)
		}
		var user stun.Username
		if err := user.GetFrom(got); err != nil || user.String() != cur.Username {
			t.Fatalf("%v: username %q (%v), want %q", method, user, err, cur.Username)
		}
		if err := stun.NewLongTermIntegrity(cur.Username, "meshd", turncred.Password(resignSecret, cur.Username)).Check(got); err != nil {
			t.Errorf("%v: integrity with the new key: %v", method, err)
		}
		if err := stun.Fingerprint.Check(got); err != nil {
			t.Errorf("%v: fingerprint: %v", method, err)
		}
		if got.Type != m.Type || got.TransactionID != m.TransactionID {
			t.Errorf("%v: type %v id %x, want %v %x", method, got.Type, got.TransactionID, m.Type, m.TransactionID)
		}
		for _, a := range []stun.AttrType{stun.AttrLifetime, stun.AttrNonce, stun.AttrRealm} {
			w, _ := m.Get(a)
			g, err := got.Get(a)
			if err != nil || !bytes.Equal(g, w) {
				t.Errorf("%v: %v = %q (%v), want %q", method, a, g, err, w)
			}
		}
	}
	if n := c.resigned.Load(); n != 4 {
		t.Errorf("resigned %d, want 4", n)
	}

	// Left alone: what is signed with the newest credential already, other
	// ids, usernames that are not TURN REST ones, ICE's checks, data.
	other := turncred.Issue(resignSecret, "peer2", now, time.Minute)
	static := turncred.Credential{Username: "user", Password: "secret"}
	ice, err := stun.Build(stun.TransactionID, stun.BindingRequest, stun.NewUsername("1234:5678"),
		stun.NewShortTermIntegrity("pwd"), stun.Fingerprint)
	if err != nil {
		t.Fatal(err)
	}
	chData := []byte{0x40, 0x00, 0x00, 0x04, 1, 0, 0, 0}
	for name, p := range map[string][]byte{
		"newest":       pionRequest(t, stun.MethodRefresh, cur).Raw,
		"other id":     pionRequest(t, stun.MethodRefresh, other).Raw,
		"static":       pionRequest(t, stun.MethodRefresh, static).Raw,
		"ice":          ice.Raw,
		"channel data": chData,
		"cut":          pionRequest(t, stun.MethodRefresh, old).Raw[:40],
	} {
		if out := c.resign(p); !bytes.Equal(out, p) {
			t.Errorf("%s: changed", name)
		}
	}
	var none *turnCreds
	if p := pionRequest(t, stun.MethodRefresh, old).Raw; !bytes.Equal(none.resign(p), p) {
		t.Error("nil creds changed a request")
	}
}

// rotationRelay runs meshd's relay on loopback with TURN over UDP, TCP and
// TLS, and returns it with the URL of transport ("udp", "tcp", "tls").
func rotationRelay(t *testing.T, transport string) (*relay.Server, string) {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := tlsconf.ServerConfig(tlsconf.Options{DataDir: t.TempDir(), Hosts: []string{"127.0.0.1"}})
	if err != nil {
		t.Fatal(err)
	}
	s, err := relay.New(relay.Options{
		Log: zap.NewNop(), Secret: resignSecret, PublicIP: netip.MustParseAddr("127.0.0.1"),
		ListenAddr: "127.0.0.1:0", Workers: 1, TLSListener: tls.NewListener(ln, srv.Config),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	urls := relay.URLs("127.0.0.1", int(s.UDPAddr().Port()), int(s.TLSAddr().Port()))
	want := map[string]string{"udp": "turn:", "tcp": "turn:", "tls": "turns:"}[transport]
	for _, u := range urls {
		if len(u) > len(want) && u[:len(want)] == want && (transport == "tls" || u[len(u)-3:] == transport) {
			return s, u
		}
	}
	t.Fatalf("no %s URL in %v", transport, urls)
	return nil, ""
}

func credServers(t *testing.T, url, id string, ttl time.Duration) Servers {
	t.Helper()
	c := turncred.Issue(resignSecret, id, time.Now(), ttl)
	u, err := stun.ParseURI(url)
	if err != nil {
		t.Fatal(err)
	}
	u.Username, u.Password = c.Username, c.Password
	return Servers{TURN: []*stun.URI{u}}
}

// rotatingPair connects two relay sessions through s at url, with
// credentials of ttl, and allocations that live allocLife (so pion
// refreshes them every allocLife/2).
func rotatingPair(t *testing.T, url string, ttl, allocLife time.Duration) (a, b *end, ca, cb net.Conn) {
	t.Helper()
	tm := RelayTiming
	tm.TURNLifetime = allocLife
	a, b = pair(t, Relay, Servers{}, false)
	a.timing, b.timing = &tm, &tm
	a.servers, b.servers = credServers(t, url, "a", ttl), credServers(t, url, "b", ttl)
	s := a.newSession(31)
	b.receive(offer(s))
	if err := s.Gather(); err != nil {
		t.Fatal(err)
	}
	if p := waitPair(t, a); p.Local.Type != "relay" {
		t.Fatalf("pair %v is not relayed", p)
	}
	waitPair(t, b)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var err error
	if ca, err = s.WaitConn(ctx); err != nil {
		t.Fatal(err)
	}
	if cb, err = b.session().WaitConn(ctx); err != nil {
		t.Fatal(err)
	}
	return a, b, ca, cb
}

// reads hands what c reads to a channel (pion's ice.Conn has no read
// deadlines) until c is closed.
func reads(c net.Conn) <-chan []byte {
	ch := make(chan []byte, 64)
	go func() {
		defer close(ch)
		buf := make([]byte, 1500)
		for {
			n, err := c.Read(buf)
			if err != nil {
				return
			}
			select {
			case ch <- append([]byte(nil), buf[:n]...):
			default:
			}
		}
	}()
	return ch
}

// exchange sends one message each way and reports whether both arrived
// within a second.
func exchange(ca, cb net.Conn, ra, rb <-chan []byte, seq int) bool {
	for _, d := range []struct {
		w net.Conn
		r <-chan []byte
	}{{ca, rb}, {cb, ra}} {
		msg := []byte("ciphertext " + strconv.Itoa(seq))
		if _, err := d.w.Write(msg); err != nil {
			return false
		}
		timeout := time.After(time.Second)
		for got := false; !got; {
			select {
			case m, ok := <-d.r:
				if !ok {
					return false
				}
				got = bytes.Equal(m, msg) // earlier ones that arrived late are skipped
			case <-timeout:
				return false
			}
		}
	}
	return true
}

// A relay session outlives many rotations of short-lived credentials over
// TURN/UDP, TCP and TLS: its allocations are refreshed every second with
// whatever credential is newest, long after the first one expired, and
// keep carrying data. Without signing pion's refreshes again the relay
// refuses them once the first credential expired, and the allocations end.
func TestRelaySessionOutlivesCredentials(t *testing.T) {
	const (
		ttl       = 3 * time.Second // truncated to the second: 2 to 3 s
		allocLife = 2 * time.Second
		run       = 8 * time.Second
	)
	for _, transport := range []string{"udp", "tcp", "tls"} {
		t.Run(transport, func(t *testing.T) {
			s, url := rotationRelay(t, transport)
			a, b, ca, cb := rotatingPair(t, url, ttl, allocLife)
			if st := s.Stats(); st.AllocationsByTransport[transport] != 2 {
				t.Fatalf("allocations by transport %v, want 2 over %s", st.AllocationsByTransport, transport)
			}
			ra, rb := reads(ca), reads(cb)
			start := time.Now()
			next := start
			for i := 0; time.Since(start) < run; i++ {
				if time.Now().After(next) { // rotate every second, as control would at half-life
					a.session().SetTURNCredentials(credServers(t, url, "a", ttl))
					b.session().SetTURNCredentials(credServers(t, url, "b", ttl))
					next = next.Add(time.Second)
				}
				if !exchange(ca, cb, ra, rb, i) {
					t.Fatalf("data stopped %v after the first credentials were issued (stats %+v)", time.Since(start), s.Stats())
				}
				time.Sleep(200 * time.Millisecond) // the pace of the traffic, not a wait for a condition
			}
			st := s.Stats()
			if st.AllocationsByTransport[transport] != 2 || st.AuthRefused["expired"] != 0 {
				t.Fatalf("stats %+v: want both allocations and no expired credential refused", st)
			}
			for _, e := range []*end{a, b} {
				if n := e.session().rnet.creds.resigned.Load(); n == 0 {
					t.Fatal("no request was signed with a newer credential")
				}
			}
		})
	}
}

// A peer whose credentials stop being renewed (deleted at control) loses
// its allocation within a credential lifetime plus an allocation lifetime,
// while the other peer's, renewed, stays.
func TestRelaySessionEndsWithoutFreshCredentials(t *testing.T) {
	const (
		ttl       = 3 * time.Second
		allocLife = 2 * time.Second
	)
	s, url := rotationRelay(t, "udp")
	_, b, _, _ := rotatingPair(t, url, ttl, allocLife)
	if st := s.Stats(); st.Allocations != 2 {
		t.Fatalf("%d allocations, want 2", st.Allocations)
	}
	start := time.Now()
	next := start
	// b's credentials keep being renewed, a's not.
	testutil.WaitEvery(t, ttl+allocLife+3*time.Second, 50*time.Millisecond, "a's allocation gone after its credentials stopped", func() bool {
		if time.Now().After(next) {
			b.session().SetTURNCredentials(credServers(t, url, "b", ttl))
			next = next.Add(time.Second)
		}
		return s.Stats().Allocations == 1
	})
	t.Logf("a's allocation ended %v after its last credential was issued", time.Since(start))
	if st := s.Stats(); st.AuthRefused["expired"] == 0 || st.Users != 1 {
		t.Fatalf("stats %+v: want a's expired credential refused and b alone holding an allocation", st)
	}
}

// errorResponse is a server's error answer to req.
func errorResponse(t *testing.T, req *stun.Message, code stun.ErrorCode) []byte {
	t.Helper()
	m, err := stun.Build(stun.NewTransactionIDSetter(req.TransactionID),
		stun.NewType(req.Type.Method, stun.ClassErrorResponse), code, stun.Fingerprint)
	if err != nil {
		t.Fatal(err)
	}
	return m.Raw
}

func usernameOf(t *testing.T, p []byte) string {
	t.Helper()
	m := &stun.Message{Raw: p}
	var u stun.Username
	if err := m.Decode(); err != nil {
		t.Fatal(err)
	}
	if err := u.GetFrom(m); err != nil {
		t.Fatal(err)
	}
	return u.String()
}

// A server that ties an allocation to its first username (coturn: 441
// Wrong Credentials) makes the connection stop signing anew, over UDP and
// over TCP/TLS streams, so pion's refreshes work until its own credential
// expires; other errors change nothing.
func TestSignerKeepsUsernameAfterWrongCredentials(t *testing.T) {
	now := time.Now()
	old := turncred.Issue(resignSecret, "peer1", now, time.Minute)
	cur := turncred.Issue(resignSecret, "peer1", now.Add(30*time.Second), time.Minute)
	var creds turnCreds
	creds.set([]*stun.URI{uri(cur)})

	type conn struct {
		write func([]byte)
		read  func() // pion reads what the server sent
	}
	check := func(t *testing.T, c conn, server func() []byte, answer func([]byte)) {
		for i, tc := range []struct {
			code stun.ErrorCode
			want string
		}{
			{stun.CodeStaleNonce, cur.Username}, // not a refusal of the username
			{stun.CodeWrongCredentials, cur.Username},
			{0, old.Username}, // from now on pion's own
		} {
			req := pionRequest(t, stun.MethodRefresh, old)
			c.write(req.Raw)
			if got := usernameOf(t, server()); got != tc.want {
				t.Fatalf("request %d: server got username %q, want %q", i, got, tc.want)
			}
			if tc.code != 0 {
				answer(errorResponse(t, req, tc.code))
				c.read()
			}
		}
	}

	t.Run("udp", func(t *testing.T) {
		srv, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		defer srv.Close()
		uc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		var recv atomic.Pointer[receiver]
		s := newTurnSocket(uc, &recv, nil)
		defer s.Close()
		s.sign = newSigner(&creds)
		buf := make([]byte, 1500)
		var client net.Addr
		check(t, conn{
			write: func(p []byte) {
				if _, err := s.WriteTo(p, srv.LocalAddr()); err != nil {
					t.Fatal(err)
				}
			},
			read: func() {
				_ = s.SetReadDeadline(time.Now().Add(5 * time.Second))
				if _, _, err := s.ReadFrom(buf); err != nil {
					t.Fatal(err)
				}
			},
		}, func() []byte {
			_ = srv.SetReadDeadline(time.Now().Add(5 * time.Second))
			n, from, err := srv.ReadFrom(buf)
			if err != nil {
				t.Fatal(err)
			}
			client = from
			return append([]byte(nil), buf[:n]...)
		}, func(p []byte) {
			if _, err := srv.WriteTo(p, client); err != nil {
				t.Fatal(err)
			}
		})
	})

	t.Run("stream", func(t *testing.T) {
		cl, sv := net.Pipe()
		defer cl.Close()
		defer sv.Close()
		c := &resignConn{Conn: cl, sign: newSigner(&creds)}
		buf := make([]byte, 1500)
		fromServer := make(chan []byte, 1)
		check(t, conn{
			write: func(p []byte) {
				go func() { _, _ = c.Write(p) }()
			},
			read: func() {
				// ChannelData (padded) around the answer, read in small
				// pieces, as pion's STUNConn may.
				want := len(<-fromServer)
				for got := 0; got < want; {
					n, err := c.Read(buf[:7])
					if err != nil {
						t.Fatal(err)
					}
					got += n
				}
			},
		}, func() []byte {
			n, err := sv.Read(buf)
			if err != nil {
				t.Fatal(err)
			}
			return append([]byte(nil), buf[:n]...)
		}, func(p []byte) {
			framed := append([]byte{0x40, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5, 0, 0, 0}, p...)
			fromServer <- framed
			go func() { _, _ = sv.Write(framed) }()
		})
	})
}

// The scanner finds each STUN message in a TURN stream however the reads
// cut it, past ChannelData of every padding, and gives up on garbage.
func TestSTUNScanner(t *testing.T) {
	refresh := pionRequest(t, stun.MethodRefresh, turncred.Issue(resignSecret, "p", time.Now(), time.Minute))
	a := errorResponse(t, refresh, stun.CodeWrongCredentials)
	b := errorResponse(t, refresh, stun.CodeStaleNonce)
	var stream []byte
	for i := 0; i < 4; i++ { // payloads of 5 to 8 bytes: 3 to 0 bytes of padding
		stream = append(stream, 0x40, 0x00, 0x00, byte(5+i))
		stream = append(stream, make([]byte, (5+i+3)&^3)...)
		stream = append(stream, a...)
	}
	stream = append(stream, b...)
	for _, piece := range []int{1, 3, 7, 64, len(stream)} {
		var sc stunScanner
		var got [][]byte
		for p := stream; len(p) > 0; {
			n := min(piece, len(p))
			sc.feed(p[:n], func(m []byte) { got = append(got, append([]byte(nil), m...)) })
			p = p[n:]
		}
		if len(got) != 5 || !bytes.Equal(got[0], a) || !bytes.Equal(got[3], a) || !bytes.Equal(got[4], b) {
			t.Fatalf("pieces of %d: got %d messages", piece, len(got))
		}
	}
	var sc stunScanner
	calls := 0
	sc.feed(append([]byte{0xff, 0xff, 0, 0}, a...), func([]byte) { calls++ })
	if !sc.dead || calls != 0 {
		t.Fatalf("garbage: dead %v, %d messages", sc.dead, calls)
	}
}
