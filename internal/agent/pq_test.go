package agent

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"go.uber.org/zap/zaptest"

	adminv1 "meshd/api/admin/v1"
	daemonv1 "meshd/api/daemon/v1"
	"meshd/internal/keys"
	"meshd/internal/testutil"
	"meshd/wg"
)

// Short rotation for tests: above wireguard-go's 5 s between initiations,
// so that every key sees its handshake.
var fastPQ = &PQTiming{Rotate: 6 * time.Second, Retry: 500 * time.Millisecond, Attempts: 4, Grace: 15 * time.Second, Fallback: 3 * time.Second}

func (w *world) setPQ(mode string) {
	w.tb.Helper()
	if _, err := w.control.Admin.UpdateAccount(context.Background(),
		connect.NewRequest(&adminv1.UpdateAccountRequest{PostQuantum: &mode})); err != nil {
		w.tb.Fatal(err)
	}
}

// pqAgent starts an agent with fast rotation; off runs it with
// --post-quantum=false.
func (w *world) pqAgent(name string, off bool) *Engine {
	return w.agentWith(name, func(o *Options) { o.PQTiming, o.PostQuantumOff = fastPQ, off })
}

// pqPeer returns e's status of the peer with overlay address ip.
func pqPeer(e *Engine, ip netip.Addr) *daemonv1.PeerStatus {
	for _, p := range e.Status().Peers {
		if p.OverlayIp == ip.String() {
			return p
		}
	}
	return nil
}

// devPSK returns the pre-shared key dev holds for peer (nil: none).
func devPSK(tb testing.TB, dev wg.Device, peer keys.Key) *[32]byte {
	tb.Helper()
	st, err := dev.Stats()
	if err != nil {
		tb.Fatal(err)
	}
	for _, s := range st {
		if s.PublicKey == peer {
			return s.PresharedKey
		}
	}
	return nil
}

// samePQKey waits until a and b hold the same post-quantum key for each
// other and both say so in status; it returns the key.
func samePQKey(tb testing.TB, a, b *Engine, ipa, ipb netip.Addr, d time.Duration) [32]byte {
	tb.Helper()
	var k [32]byte
	testutil.WaitFor(tb, d, "the same post-quantum key on both sides", func() bool {
		pa, pb := pqPeer(a, ipb), pqPeer(b, ipa)
		if pa == nil || pb == nil || !pa.PostQuantum || !pb.PostQuantum {
			return false
		}
		ka, kb := devPSK(tb, a.Device(), b.PublicKey()), devPSK(tb, b.Device(), a.PublicKey())
		if ka == nil || kb == nil || *ka != *kb {
			return false
		}
		k = *ka
		return true
	})
	return k
}

// TestPQRotationUnderTrafficLosesNothing: two agents in permissive mode
// agree on a key, rotate it several times while a sends b a datagram every
// 20 ms, and none is lost; each new key is confirmed by a completed handshake.
func TestPQRotationUnderTrafficLosesNothing(t *testing.T) {
	w := newWorld(t)
	w.setPQ("permissive")
	a, b := w.pqAgent("pqa", false), w.pqAgent("pqb", false)
	da, ipa := waitUp(t, a)
	db, ipb := waitUp(t, b)
	waitPing(t, da, ipb, 15*time.Second)
	first := samePQKey(t, a, b, ipa, ipb, 15*time.Second)

	// Probe through three rotations, every 20 ms, each answer awaited
	// (UDP: the netstack's ping sockets drop replies now and then, tunnel
	// or not).
	pr := newUDPProbe(t, da, db, ipb)
	seen := map[[32]byte]bool{first: true}
	var hs time.Time
	sent, lost := 0, 0
	deadline := time.Now().Add(40 * time.Second)
	tick := time.NewTicker(20 * time.Millisecond) // the ping interval
	defer tick.Stop()
	for len(seen) < 4 && time.Now().Before(deadline) {
		<-tick.C
		sent++
		if err := pr.probe(time.Second); err != nil {
			lost++
			t.Logf("probe %d lost: %v", sent, err)
		}
		if k := devPSK(t, da, b.PublicKey()); k != nil && !seen[*k] {
			seen[*k] = true
			t.Logf("rotation %d after %d probes", len(seen)-1, sent)
		}
		if p := pqPeer(a, ipb); p != nil && p.LastHandshake != nil {
			hs = p.LastHandshake.AsTime()
		}
	}
	if len(seen) < 4 {
		t.Fatalf("%d rotations in 40 s, want 3 (rotate every %v)", len(seen)-1, fastPQ.Rotate)
	}
	if lost > 0 {
		t.Fatalf("%d of %d probes lost across %d rotations", lost, sent, len(seen)-1)
	}
	// Both sides hold the newest key, and a handshake used it.
	k := samePQKey(t, a, b, ipa, ipb, 10*time.Second)
	testutil.WaitFor(t, 10*time.Second, "a handshake since the last rotation", func() bool {
		p := pqPeer(a, ipb)
		return p.PostQuantumRotated != nil && p.LastHandshake != nil && !p.LastHandshake.AsTime().Before(p.PostQuantumRotated.AsTime())
	})
	hs = pqPeer(a, ipb).LastHandshake.AsTime()
	t.Logf("%d probes, none lost, %d rotations; last handshake %v, key %x…", sent, len(seen)-1, hs, k[:4])
}

// TestPQPermissiveMixedPair: in permissive mode a peer started with
// --post-quantum=false connects without a key, and both say so.
func TestPQPermissiveMixedPair(t *testing.T) {
	w := newWorld(t)
	w.setPQ("permissive")
	a, b := w.pqAgent("pqa", false), w.pqAgent("plain", true)
	da, ipa := waitUp(t, a)
	db, ipb := waitUp(t, b)
	waitPing(t, da, ipb, 15*time.Second)
	waitPing(t, db, ipa, 5*time.Second)
	for _, c := range []struct {
		e  *Engine
		ip netip.Addr
	}{{a, ipb}, {b, ipa}} {
		p := pqPeer(c.e, c.ip)
		if p == nil || p.PostQuantum || p.PostQuantumRotated != nil {
			t.Fatalf("status %+v: want post_quantum false, never rotated", p)
		}
	}
	if k := devPSK(t, da, b.PublicKey()); k != nil {
		t.Fatalf("a holds a pre-shared key for b: %x", k)
	}
}

// TestPQStrictCutsNonPQPeer: in strict mode two post-quantum peers connect
// with a key; a peer without support is not connected, and status says why
// on both sides.
func TestPQStrictCutsNonPQPeer(t *testing.T) {
	w := newWorld(t)
	w.setPQ("strict")
	a, b, c := w.pqAgent("pqa", false), w.pqAgent("pqb", false), w.pqAgent("plain", true)
	da, ipa := waitUp(t, a)
	_, ipb := waitUp(t, b)
	dc, ipc := waitUp(t, c)
	waitPing(t, da, ipb, 15*time.Second)
	samePQKey(t, a, b, ipa, ipb, 15*time.Second)

	testutil.WaitFor(t, 10*time.Second, "status says why on both sides", func() bool {
		pa, pc := pqPeer(a, ipc), pqPeer(c, ipa)
		return pa != nil && pc != nil &&
			strings.Contains(pa.Reason, "does not support them") && strings.Contains(pc.Reason, "--post-quantum=false")
	})
	// Paths may form; handshakes may not. Give them the time a first
	// handshake takes with a key, and then some.
	for i := 0; i < 20; i++ {
		if err := ping(da, ipc, 100*time.Millisecond); err == nil {
			t.Fatal("a reaches the peer without post-quantum keys in strict mode")
		}
		if err := ping(dc, ipa, 100*time.Millisecond); err == nil {
			t.Fatal("the peer without post-quantum keys reaches a in strict mode")
		}
	}
	if p := pqPeer(a, ipc); p.State == PeerConnected || p.PostQuantum {
		t.Fatalf("status of the cut peer: %+v", p)
	}

	// Permissive lets it in without a key.
	w.setPQ("permissive")
	waitPing(t, da, ipc, 20*time.Second)
	if p := pqPeer(a, ipc); p.PostQuantum {
		t.Fatalf("post_quantum with a peer that has none: %+v", p)
	}
}

// TestPQPeerRestart: an agent that restarts (losing its key, maybe in the
// middle of a rotation) agrees on a new key with its peer, and the tunnel
// comes back.
func TestPQPeerRestart(t *testing.T) {
	w := newWorld(t)
	w.setPQ("strict") // no fallback: only a new key brings the tunnel back
	a := w.pqAgent("pqa", false)
	dirB := filepath.Join(t.TempDir(), "pqb")
	startB := func(setupKey string) (*Engine, func()) {
		e, err := New(Options{
			StateDir: dirB, ControlURL: w.control.URL, Pin: w.pin, SetupKey: setupKey, Hostname: "pqb",
			Device: wg.Config{Mode: wg.ModeNetstack, Name: "pqb"}, Clients: RealClients(), IncludeLoopback: true,
			PQTiming: fastPQ, Log: zaptest.NewLogger(t).Named("pqb"),
		})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); e.Run(ctx) }()
		stop := func() { cancel(); <-done }
		t.Cleanup(stop)
		return e, stop
	}
	b, stopB := startB(w.setupKey)
	da, ipa := waitUp(t, a)
	_, ipb := waitUp(t, b)
	waitPing(t, da, ipb, 15*time.Second)
	k1 := samePQKey(t, a, b, ipa, ipb, 15*time.Second)

	// Restart b just as a rotation is under way: when a's key changes.
	testutil.WaitFor(t, 2*fastPQ.Rotate, "a rotation", func() bool {
		k := devPSK(t, da, b.PublicKey())
		return k != nil && *k != k1
	})
	stopB()
	b, _ = startB("")
	_, ipb2 := waitUp(t, b)
	if ipb2 != ipb {
		t.Fatalf("b came back as %v, was %v", ipb2, ipb)
	}
	start := time.Now()
	waitPing(t, da, ipb, 30*time.Second)
	k2 := samePQKey(t, a, b, ipa, ipb, 15*time.Second)
	if k2 == k1 {
		t.Fatal("the old key after a restart")
	}
	t.Logf("tunnel back with a new post-quantum key %v after the restart", time.Since(start).Round(time.Millisecond))
}

// udpProbe sends numbered datagrams from a through the tunnel to an echo
// on b and counts the answers: a lost packet either way is a lost probe.
type udpProbe struct {
	c   net.Conn
	seq uint32
	buf []byte
}

func newUDPProbe(tb testing.TB, da, db wg.Device, ipb netip.Addr) *udpProbe {
	tb.Helper()
	ln, err := db.Net().ListenUDPAddrPort(netip.AddrPortFrom(ipb, 7007))
	if err != nil {
		tb.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 1500)
		for {
			n, from, err := ln.ReadFrom(buf)
			if err != nil {
				return
			}
			ln.WriteTo(buf[:n], from)
		}
	}()
	tb.Cleanup(func() { ln.Close(); <-done })
	c, err := da.Net().DialUDPAddrPort(netip.AddrPort{}, netip.AddrPortFrom(ipb, 7007))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	return &udpProbe{c: c, buf: make([]byte, 1500)}
}

// probe sends one datagram and waits up to timeout for its echo (echoes of
// earlier ones are skipped).
func (p *udpProbe) probe(timeout time.Duration) error {
	p.seq++
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], p.seq)
	if _, err := p.c.Write(b[:]); err != nil {
		return err
	}
	p.c.SetReadDeadline(time.Now().Add(timeout))
	for {
		n, err := p.c.Read(p.buf)
		if err != nil {
			return fmt.Errorf("probe %d: %w", p.seq, err)
		}
		if n == 4 && binary.BigEndian.Uint32(p.buf) == p.seq {
			return nil
		}
	}
}

// keylessDevice hides every optional interface of a device, pre-shared
// keys among them: an agent on it says it supports post-quantum keys but
// never takes part in an exchange.
type keylessDevice struct{ wg.Device }

// TestPQPermissiveFallsBack: when the exchange keeps failing, a permissive
// pair runs without a key, and status says so after the bounded time.
func TestPQPermissiveFallsBack(t *testing.T) {
	w := newWorld(t)
	w.setPQ("permissive")
	a := w.pqAgent("pqa", false)
	b := w.agentWith("mute", func(o *Options) {
		o.PQTiming = fastPQ
		o.NewDevice = func(ctx context.Context, c wg.Config) (wg.Device, error) {
			d, err := wg.New(ctx, c)
			if err != nil {
				return nil, err
			}
			return keylessDevice{d}, nil
		}
	})
	da, _ := waitUp(t, a)
	_, ipb := waitUp(t, b)
	waitPing(t, da, ipb, 15*time.Second)
	testutil.WaitFor(t, 4*fastPQ.Fallback, "status says a runs without a key", func() bool {
		p := pqPeer(a, ipb)
		return p != nil && !p.PostQuantum && strings.Contains(p.Reason, "connected without a post-quantum key (permissive)")
	})
	waitPing(t, da, ipb, 5*time.Second)
}
