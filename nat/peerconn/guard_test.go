package peerconn

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
)

// guardedPair is a pair of direct-session ends on loopback: a's socket on
// 127.0.0.2, b's on 127.0.0.1, with the given guards on each end's
// sessions and muxes. Failures come quickly.
func guardedPair(t *testing.T, sessA, sessB, muxA, muxB *Guard) (a, b *end) {
	t.Helper()
	a, b = pair(t, Direct, Servers{}, false)
	fast := DirectTiming
	fast.MaxBindingRequests, fast.Disconnected, fast.Failed = 20, 300*time.Millisecond, 300*time.Millisecond
	for _, x := range []struct {
		e     *end
		addr  string
		sess  *Guard
		muxed *Guard
	}{{a, "127.0.0.2:0", sessA, muxA}, {b, "127.0.0.1:0", sessB, muxB}} {
		c, err := net.ListenPacket("udp4", x.addr)
		if err != nil {
			t.Fatal(err)
		}
		x.e.mux = NewMux(c, nil, zaptest.NewLogger(t))
		x.e.mux.SetGuard(x.muxed)
		x.e.guard, x.e.timing = x.sess, &fast
		m := x.e.mux
		t.Cleanup(func() { m.Close(); c.Close() })
	}
	return a, b
}

// waitOutcome waits for e's session to connect or fail.
func waitOutcome(t *testing.T, e *end) (State, Pair) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case st := <-e.states:
			if st == Failed {
				return st, Pair{}
			}
		case p := <-e.pairs:
			return Connected, p
		case <-deadline:
			t.Fatal("session neither connected nor failed in 10 s")
		}
	}
}

// TestGuardedSourceLearnsNoPeerReflexive: b's address space guards a's
// address (as the overlay guards a check that came through the tunnel).
// b neither accepts a's host candidate nor learns a peer-reflexive one
// from a's checks, which its mux drops; no pair connects and b's session
// fails fast instead.
func TestGuardedSourceLearnsNoPeerReflexive(t *testing.T) {
	g := NewGuard(netip.MustParsePrefix("127.0.0.2/32"))
	a, b := guardedPair(t, nil, g, nil, g)
	s := a.newSession(9)
	b.receive(offer(s))
	if err := s.Gather(); err != nil {
		t.Fatal(err)
	}
	if st, p := waitOutcome(t, b); st != Failed {
		t.Fatalf("b connected on %v through a guarded address", p)
	}
	if b.mux.Guarded() == 0 {
		t.Fatal("b's mux dropped nothing: a's checks did not arrive, the test proves nothing")
	}
	rc, err := b.session().agent.GetRemoteCandidates()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range rc {
		t.Fatalf("b holds remote candidate %s", c)
	}
}

// TestGuardedSelectedPairRefused: only a's session guards b's address
// (its mux does not), so a learns b as a peer-reflexive candidate from
// b's checks and pion selects that pair; the session reports it failed
// instead of connected.
func TestGuardedSelectedPairRefused(t *testing.T) {
	g := NewGuard(netip.MustParsePrefix("127.0.0.1/32"))
	a, b := guardedPair(t, g, nil, nil, nil)
	s := a.newSession(10)
	b.receive(offer(s))
	if err := s.Gather(); err != nil {
		t.Fatal(err)
	}
	if st, p := waitOutcome(t, a); st != Failed {
		t.Fatalf("a connected on %v: its remote end is guarded", p)
	}
	if _, ok := s.Selected(); ok {
		t.Fatal("a refused session reports a selected pair")
	}
}

func TestGuardContains(t *testing.T) {
	var nilGuard *Guard
	if nilGuard.Contains(netip.MustParseAddr("100.64.0.1")) || nilGuard.Prefixes() != nil {
		t.Fatal("a nil guard guards something")
	}
	g := NewGuard(netip.MustParsePrefix("100.64.0.7/16"))
	for addr, want := range map[string]bool{"100.64.3.4": true, "::ffff:100.64.0.1": true, "100.65.0.1": false, "192.168.1.2": false} {
		if got := g.Contains(netip.MustParseAddr(addr)); got != want {
			t.Errorf("Contains(%s) = %v, want %v", addr, got, want)
		}
	}
	g.Set([]netip.Prefix{netip.MustParsePrefix("192.168.1.0/24")})
	if g.Contains(netip.MustParseAddr("100.64.3.4")) || !g.containsHost("192.168.1.2:51820") || !g.containsNet(&net.UDPAddr{IP: net.IPv4(192, 168, 1, 9), Port: 1}) {
		t.Fatal("Set did not replace the prefixes")
	}
}
