package peerconn

import (
	"bytes"
	"context"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pion/transport/v3"
	"github.com/pion/turn/v3"
	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// end is one side of a test pair: what the agent's worker does, minus the
// sealing and signal.
type end struct {
	tb          testing.TB
	kind        Kind
	controlling bool
	mux         *Mux
	servers     Servers
	net         transport.Net // nil: the host's
	timing      *Timing       // nil: the default
	guard       *Guard        // nil: none
	other       *end

	mu     sync.Mutex
	sess   *Session
	states chan State
	pairs  chan Pair
}

func (e *end) newSession(id uint64) *Session {
	e.tb.Helper()
	s, err := New(Config{
		Kind: e.kind, ID: id, Controlling: e.controlling, Mux: e.mux, Servers: e.servers, Net: e.net, Timing: e.timing, Guard: e.guard,
		IncludeLoopback: true, Log: testLogger(e.tb).Named(map[bool]string{true: "a", false: "b"}[e.controlling]),
		OnCandidate: func(sdp string) { go e.other.receive(msg{kind: msgCandidate, session: id, sdp: sdp}) },
		OnState: func(st State, p Pair) {
			select {
			case e.states <- st:
			default:
			}
			if st == Connected {
				select {
				case e.pairs <- p:
				default:
				}
			}
		},
	})
	if err != nil {
		e.tb.Fatal(err)
	}
	e.mu.Lock()
	e.sess = s
	e.mu.Unlock()
	return s
}

// testLogger logs to tb until tb's cleanups run, then drops: pion's TURN
// client logs from its read goroutine as it exits, after Close returned
// (its Close does not wait for it), which may be after the test ended,
// and testing panics on a Log after the end.
func testLogger(tb testing.TB) *zap.Logger {
	w := &tbWriter{tb: tb}
	tb.Cleanup(func() {
		w.mu.Lock()
		w.done = true
		w.mu.Unlock()
	})
	enc := zapcore.NewConsoleEncoder(zap.NewDevelopmentEncoderConfig())
	return zap.New(zapcore.NewCore(enc, zapcore.AddSync(w), zapcore.DebugLevel))
}

type tbWriter struct {
	mu   sync.RWMutex
	tb   testing.TB
	done bool
}

func (w *tbWriter) Write(p []byte) (int, error) {
	w.mu.RLock()
	defer w.mu.RUnlock()
	if !w.done {
		w.tb.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

func (e *end) session() *Session {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.sess
}

// msg is what the agent's worker would wrap, seal and send through signal.
type msg struct {
	kind    int // msgOffer, msgAnswer, msgCandidate
	session uint64
	creds   Credentials
	sdp     string
}

const (
	msgOffer = iota + 1
	msgAnswer
	msgCandidate
)

func offer(s *Session) msg  { return msg{kind: msgOffer, session: s.ID(), creds: s.Credentials()} }
func answer(s *Session) msg { return msg{kind: msgAnswer, session: s.ID(), creds: s.Credentials()} }

func (e *end) receive(m msg) {
	switch m.kind {
	case msgOffer:
		s := e.newSession(m.session)
		go e.other.receive(answer(s))
		if err := s.Gather(); err != nil {
			e.tb.Error(err)
		}
		if err := s.Connect(m.creds.Ufrag, m.creds.Pwd); err != nil {
			e.tb.Error(err)
		}
	case msgAnswer:
		if err := e.session().Connect(m.creds.Ufrag, m.creds.Pwd); err != nil {
			e.tb.Error(err)
		}
	case msgCandidate:
		for i := 0; i < 200 && e.session() == nil; i++ { // the offer's goroutine may lag
			time.Sleep(time.Millisecond)
		}
		if err := e.session().AddCandidate(m.sdp); err != nil {
			e.tb.Error(err)
		}
	}
}

func pair(tb testing.TB, kind Kind, servers Servers, withMux bool) (a, b *end) {
	a = &end{tb: tb, kind: kind, controlling: true, servers: servers, states: make(chan State, 16), pairs: make(chan Pair, 16)}
	b = &end{tb: tb, kind: kind, servers: servers, states: make(chan State, 16), pairs: make(chan Pair, 16)}
	a.other, b.other = b, a
	if withMux {
		for _, e := range []*end{a, b} {
			c, err := net.ListenPacket("udp4", "127.0.0.1:0")
			if err != nil {
				tb.Fatal(err)
			}
			e.mux = NewMux(c, nil, zaptest.NewLogger(tb))
			tb.Cleanup(func() { e.mux.Close(); c.Close() })
		}
	}
	tb.Cleanup(func() {
		for _, e := range []*end{a, b} {
			if s := e.session(); s != nil {
				s.Close()
			}
		}
	})
	return a, b
}

func waitPair(tb testing.TB, e *end) Pair {
	tb.Helper()
	select {
	case p := <-e.pairs:
		return p
	case <-time.After(10 * time.Second):
		tb.Fatal("session did not connect in 10s")
		return Pair{}
	}
}

func TestDirectSessionOnLoopback(t *testing.T) {
	a, b := pair(t, Direct, Servers{}, true)
	start := time.Now()
	s := a.newSession(7)
	b.receive(offer(s))
	if err := s.Gather(); err != nil {
		t.Fatal(err)
	}
	pa, pb := waitPair(t, a), waitPair(t, b)
	t.Logf("direct session connected in %v: %v / %v", time.Since(start), pa, pb)
	if pa.Local.Type != "host" || pa.Remote.Type == "relay" {
		t.Fatalf("pair %v is not direct", pa)
	}
	// The remote end of a's pair is b's socket: what WireGuard will send to.
	bAddr := b.mux.LocalAddr().String()
	if pa.Remote.Address != bAddr {
		t.Fatalf("a's remote candidate %s, want b's socket %s", pa.Remote.Address, bAddr)
	}
	if ap, err := RemoteAddrPort(pa.Remote); err != nil || ap.String() != bAddr {
		t.Fatalf("RemoteAddrPort = %v, %v", ap, err)
	}
	// Keepalive checks give an RTT.
	deadline := time.Now().Add(5 * time.Second)
	for s.RTT() == 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if s.RTT() <= 0 || s.RTT() > time.Second {
		t.Fatalf("rtt %v on loopback", s.RTT())
	}
}

func TestDirectSessionFailsWithoutPeer(t *testing.T) {
	a, _ := pair(t, Direct, Servers{}, true)
	fast := DirectTiming
	fast.Disconnected, fast.Failed = 200*time.Millisecond, 200*time.Millisecond
	s, err := New(Config{
		Kind: Direct, ID: 1, Controlling: true, Mux: a.mux, Timing: &fast,
		Log: zaptest.NewLogger(t), OnCandidate: func(string) {},
		OnState: func(st State, _ Pair) { a.states <- st },
	})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Connect("abcd", "0123456789012345678901234"); err != nil {
		t.Fatal(err)
	}
	deadline := time.After(10 * time.Second)
	for {
		select {
		case st := <-a.states:
			if st == Failed {
				return
			}
		case <-deadline:
			t.Fatal("a session without a peer never failed")
		}
	}
}

// turnServer runs pion's TURN server on loopback for relay sessions.
func turnServer(tb testing.TB) Servers {
	tb.Helper()
	udp, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	tcp, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	key := turn.GenerateAuthKey("user", "meshd", "secret")
	gen := &turn.RelayAddressGeneratorStatic{RelayAddress: net.ParseIP("127.0.0.1"), Address: "127.0.0.1"}
	srv, err := turn.NewServer(turn.ServerConfig{
		Realm: "meshd",
		AuthHandler: func(u, realm string, _ net.Addr) ([]byte, bool) {
			return key, u == "user"
		},
		PacketConnConfigs: []turn.PacketConnConfig{{PacketConn: udp, RelayAddressGenerator: gen}},
		ListenerConfigs:   []turn.ListenerConfig{{Listener: tcp, RelayAddressGenerator: gen}},
	})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { srv.Close() })
	s, err := ParseServers([]RelayServer{{
		URLs: []string{
			"turn:" + udp.LocalAddr().String() + "?transport=udp",
			"turn:" + tcp.Addr().String() + "?transport=tcp",
		},
		Username: "user", Credential: "secret",
	}})
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

func TestRelaySessionCarriesData(t *testing.T) {
	servers := turnServer(t)
	a, b := pair(t, Relay, servers, false)
	start := time.Now()
	s := a.newSession(9)
	b.receive(offer(s))
	if err := s.Gather(); err != nil {
		t.Fatal(err)
	}
	pa := waitPair(t, a)
	waitPair(t, b)
	t.Logf("relay session connected in %v: %v", time.Since(start), pa)
	if pa.Local.Type != "relay" {
		t.Fatalf("pair %v is not relayed", pa)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ca, err := s.WaitConn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cb, err := b.session().WaitConn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	msg := []byte("wireguard ciphertext, honest")
	if _, err := ca.Write(msg); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1500)
	cb.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := cb.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf[:n], msg) {
		t.Fatalf("read %q, want %q", buf[:n], msg)
	}
}

func TestParseServers(t *testing.T) {
	s, err := ParseServers([]RelayServer{{
		URLs: []string{
			"stun:relay.example:3478",
			"turn:relay.example:3478?transport=udp",
			"turn:relay.example:3478?transport=tcp",
			"turns:relay.example:5349?transport=tcp",
			"bogus:x",
		},
		Username: "1700000000:peer", Credential: "pw",
	}})
	if err == nil || !strings.Contains(err.Error(), "bogus") {
		t.Fatalf("bad url not reported: %v", err)
	}
	if len(s.STUN) != 1 || s.STUN[0].String() != "stun:relay.example:3478" {
		t.Fatalf("stun %v: the turn udp server is the same stun server, want it once", s.STUN)
	}
	if len(s.TURN) != 3 {
		t.Fatalf("turn %v", s.TURN)
	}
	for _, u := range s.TURN {
		if u.Username != "1700000000:peer" || u.Password != "pw" {
			t.Fatalf("turn %v lacks the credentials", u)
		}
	}
	// A map with only a TURN server still gives a STUN server.
	s2, _ := ParseServers([]RelayServer{{URLs: []string{"turn:198.51.100.1:3478"}, Username: "u", Credential: "p"}})
	if len(s2.STUN) != 1 || s2.STUN[0].Host != "198.51.100.1" {
		t.Fatalf("stun from turn: %v", s2.STUN)
	}
	if !s.Equal(s) || s.Equal(s2) {
		t.Fatal("Equal")
	}
}

func TestGuardedCandidatesNeitherOfferedNorAccepted(t *testing.T) {
	var mu sync.Mutex
	var sent []string
	s, err := New(Config{
		Kind: Direct, ID: 1, Mux: func() *Mux { a, _ := pair(t, Direct, Servers{}, true); return a.mux }(),
		IncludeLoopback: true, Guard: NewGuard(netip.MustParsePrefix("127.0.0.0/8")),
		Log: zaptest.NewLogger(t),
		OnCandidate: func(sdp string) {
			mu.Lock()
			sent = append(sent, sdp)
			mu.Unlock()
		},
		OnState: func(State, Pair) {},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Gather(); err != nil {
		t.Fatal(err)
	}
	if err := s.AddCandidate("1 1 udp 2130706431 127.0.0.1 9 typ host"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-s.Gathered():
	case <-time.After(5 * time.Second):
		t.Fatal("gathering did not complete")
	}
	mu.Lock()
	defer mu.Unlock()
	if len(sent) != 0 {
		t.Fatalf("excluded candidates offered: %q", sent)
	}
	if rc, _ := s.agent.GetRemoteCandidates(); len(rc) != 0 {
		t.Fatalf("excluded remote candidate accepted: %v", rc)
	}
}
