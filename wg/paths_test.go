package wg

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/stun/v2"

	"meshd/internal/testutil"
)

// countingConn is one end of a relay made of two UDP sockets on loopback;
// it counts what goes through it, so a test can tell the relay carried the
// traffic.
type countingConn struct {
	*net.UDPConn
	written atomic.Int64
	read    atomic.Int64
}

func (c *countingConn) Write(p []byte) (int, error) {
	n, err := c.UDPConn.Write(p)
	c.written.Add(int64(n))
	return n, err
}

func (c *countingConn) Read(p []byte) (int, error) {
	n, err := c.UDPConn.Read(p)
	c.read.Add(int64(n))
	return n, err
}

// relayPair returns two connected UDP sockets on loopback standing in for a
// TURN relay between two peers.
func relayPair(tb testing.TB) (*countingConn, *countingConn) {
	tb.Helper()
	l, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	must(tb, err)
	c2, err := net.DialUDP("udp4", nil, l.LocalAddr().(*net.UDPAddr))
	must(tb, err)
	l.Close()
	c1, err := net.DialUDP("udp4", l.LocalAddr().(*net.UDPAddr), c2.LocalAddr().(*net.UDPAddr))
	must(tb, err)
	tb.Cleanup(func() { c1.Close(); c2.Close() })
	return &countingConn{UDPConn: c1}, &countingConn{UDPConn: c2}
}

// stream echoes chunks over c in the background until stopped and counts
// the bytes that made the round trip; any error or a stall of 10 s fails.
type stream struct {
	moved atomic.Int64
	stop  chan struct{}
	done  chan error
}

func startStream(tb testing.TB, c net.Conn) *stream {
	tb.Helper()
	s := &stream{stop: make(chan struct{}), done: make(chan error, 1)}
	go func() {
		buf := make([]byte, 32<<10)
		in := make([]byte, len(buf))
		for i := 0; ; i++ {
			select {
			case <-s.stop:
				s.done <- nil
				return
			default:
			}
			buf[0], buf[len(buf)-1] = byte(i), byte(i>>8)
			c.SetDeadline(time.Now().Add(30 * time.Second)) // generous: a loaded CI machine, not a path switch, is slow here
			if _, err := c.Write(buf); err != nil {
				s.done <- err
				return
			}
			if _, err := readFull(c, in); err != nil {
				s.done <- err
				return
			}
			if in[0] != buf[0] || in[len(in)-1] != buf[len(buf)-1] {
				s.done <- errors.New("echo out of order")
				return
			}
			s.moved.Add(int64(len(buf)))
		}
	}()
	tb.Cleanup(func() { s.end(tb) })
	return s
}

func readFull(c net.Conn, p []byte) (int, error) {
	n := 0
	for n < len(p) {
		m, err := c.Read(p[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

func (s *stream) end(tb testing.TB) {
	tb.Helper()
	select {
	case <-s.stop:
		return
	default:
	}
	close(s.stop)
	if err := <-s.done; err != nil {
		tb.Fatalf("stream broke: %v", err)
	}
}

// advance waits until the stream moved at least n more bytes.
func (s *stream) advance(tb testing.TB, n int64) {
	tb.Helper()
	target := s.moved.Load() + n
	testutil.WaitFor(tb, 20*time.Second, fmt.Sprintf("stream did not advance by %d bytes", n), func() bool {
		select {
		case err := <-s.done:
			tb.Fatalf("stream broke: %v", err)
		default:
		}
		return s.moved.Load() >= target
	})
}

func peerStats(tb testing.TB, n *node, k [32]byte) PeerStats {
	tb.Helper()
	st, err := n.dev.Stats()
	must(tb, err)
	for _, s := range st {
		if s.PublicKey == k {
			return s
		}
	}
	tb.Fatalf("no stats for peer")
	return PeerStats{}
}

// TestSwitchPathsWhileTrafficFlows moves a TCP stream direct → relayed →
// direct (one side first, then the other) → relayed over the same conns.
func TestSwitchPathsWhileTrafficFlows(t *testing.T) {
	a, b := newNode(t, 1), newNode(t, 2)
	link(t, a, b)
	echoServer(t, b, 7)
	ra, rb := relayPair(t) // before the stream: its cleanup ends the stream first
	s := startStream(t, dial(t, a, b, 7))
	s.advance(t, 256<<10)

	must(t, a.dev.SetRelayed(b.pub, ra))
	must(t, b.dev.SetRelayed(a.pub, rb))
	testutil.WaitFor(t, 10*time.Second, "peers not on the relay", func() bool {
		return peerStats(t, a, b.pub).Relayed && peerStats(t, b, a.pub).Relayed
	})
	// The stream's count includes chunks that were already in flight on
	// the old path when the count started: the relay carries most of the
	// 256 KiB, not all (a window's worth may have gone before).
	before := ra.written.Load()
	s.advance(t, 256<<10)
	if got := ra.written.Load() - before; got < 128<<10 {
		t.Fatalf("relay carried %d bytes of a 256 KiB stream", got)
	}
	if s := peerStats(t, a, b.pub); s.Endpoint != "[100::1]:0" {
		t.Fatalf("relayed endpoint reported as %q", s.Endpoint)
	}

	// a goes direct first; b still sends through the relay for a while.
	must(t, a.dev.SetDirect(b.pub, b.loopback()))
	s.advance(t, 64<<10)
	if st := peerStats(t, a, b.pub); st.Relayed {
		t.Fatal("packets still arriving over the relay pulled a back to it")
	}
	must(t, b.dev.SetDirect(a.pub, a.loopback()))
	s.advance(t, 256<<10)
	relayed := ra.written.Load() + rb.written.Load()
	s.advance(t, 256<<10)
	if d := ra.written.Load() + rb.written.Load() - relayed; d > 16<<10 {
		t.Fatalf("relay still carried %d bytes after both went direct", d)
	}

	// Back to the relay over the same conns.
	must(t, a.dev.SetRelayed(b.pub, ra))
	must(t, b.dev.SetRelayed(a.pub, rb))
	testutil.WaitFor(t, 10*time.Second, "peers not back on the relay", func() bool {
		return peerStats(t, a, b.pub).Relayed && peerStats(t, b, a.pub).Relayed
	})
	before = ra.written.Load()
	s.advance(t, 256<<10)
	if got := ra.written.Load() - before; got < 128<<10 {
		t.Fatalf("relay carried %d bytes of 256 KiB after switching back", got)
	}
	s.end(t)
}

// TestPeerChangesLeaveOthersAlone streams to one peer while another is
// added, changed and removed.
func TestPeerChangesLeaveOthersAlone(t *testing.T) {
	a, b, c := newNode(t, 1), newNode(t, 2), newNode(t, 3)
	link(t, a, b)
	link(t, a, c)
	echoServer(t, b, 7)
	echoServer(t, c, 7)
	roundTrip(t, dial(t, a, c, 7), 64<<10)
	s := startStream(t, dial(t, a, b, 7))
	s.advance(t, 512<<10)

	for i := 0; i < 5; i++ {
		p := a.peer(c)
		p.AllowedIPs = append(p.AllowedIPs, netip.MustParsePrefix("10.99.0.0/24"))
		p.PersistentKeepalive = time.Duration(i+1) * time.Second
		must(t, a.dev.SetPeer(p))
		must(t, a.dev.RemovePeer(c.pub))
		must(t, a.dev.SetPeer(a.peer(c)))
		must(t, a.dev.SetDirect(c.pub, c.loopback()))
		s.advance(t, 128<<10)
	}
	must(t, a.dev.RemovePeer(c.pub))
	s.advance(t, 512<<10)
	s.end(t)
	if _, err := peerStatsOK(a, c.pub); err == nil {
		t.Fatal("removed peer still in stats")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	if conn, err := a.dev.Net().DialContextTCPAddrPort(ctx, netip.AddrPortFrom(c.addr, 7)); err == nil {
		conn.Close()
		t.Fatal("reached a removed peer")
	}
}

func peerStatsOK(n *node, k [32]byte) (PeerStats, error) {
	st, err := n.dev.Stats()
	if err != nil {
		return PeerStats{}, err
	}
	for _, s := range st {
		if s.PublicKey == k {
			return s, nil
		}
	}
	return PeerStats{}, errors.New("no such peer")
}

// TestSTUNOnWireGuardPort sends STUN to the WireGuard port from outside:
// it must come out of STUNConn, and the answer must leave from the
// WireGuard port, while the tunnel keeps working.
func TestSTUNOnWireGuardPort(t *testing.T) {
	a, b := newNode(t, 1), newNode(t, 2)
	link(t, a, b)
	echoServer(t, b, 7)
	c := dial(t, a, b, 7)
	roundTrip(t, c, 64<<10)

	sc := a.dev.STUNConn() // STUN that arrives while no conn is attached is dropped
	defer sc.Close()
	probe, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	must(t, err)
	defer probe.Close()
	req := stun.MustBuild(stun.TransactionID, stun.BindingRequest, stun.Fingerprint)
	_, err = probe.WriteToUDPAddrPort(req.Raw, a.loopback())
	must(t, err)

	if la := sc.LocalAddr().(*net.UDPAddr); la.Port != int(a.dev.ListenPort()) {
		t.Fatalf("STUNConn local port %d, WireGuard port %d", la.Port, a.dev.ListenPort())
	}
	buf := make([]byte, 1500)
	sc.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, from, err := sc.ReadFrom(buf)
	must(t, err)
	got := &stun.Message{Raw: append([]byte(nil), buf[:n]...)}
	must(t, got.Decode())
	if got.TransactionID != req.TransactionID || from.(*net.UDPAddr).Port != probe.LocalAddr().(*net.UDPAddr).Port {
		t.Fatalf("STUNConn got %v from %v", got, from)
	}
	resp := stun.MustBuild(stun.NewTransactionIDSetter(req.TransactionID), stun.BindingSuccess,
		&stun.XORMappedAddress{IP: net.IPv4(127, 0, 0, 1), Port: from.(*net.UDPAddr).Port}, stun.Fingerprint)
	_, err = sc.WriteTo(resp.Raw, from)
	must(t, err)
	probe.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, src, err := probe.ReadFromUDPAddrPort(buf)
	must(t, err)
	if src.Port() != a.dev.ListenPort() {
		t.Fatalf("STUN answer left from port %d, not the WireGuard port %d", src.Port(), a.dev.ListenPort())
	}
	if !stun.IsMessage(buf[:n]) {
		t.Fatal("answer is not STUN")
	}
	roundTrip(t, c, 64<<10)
}

// TestSlowSTUNReaderNeverStallsWireGuard floods the WireGuard port with
// STUN nobody reads: the excess is dropped and counted, the tunnel works.
func TestSlowSTUNReaderNeverStallsWireGuard(t *testing.T) {
	a, b := newNode(t, 1), newNode(t, 2)
	link(t, a, b)
	echoServer(t, b, 7)
	c := dial(t, a, b, 7)
	sc := a.dev.STUNConn() // attached, never read
	defer sc.Close()
	probe, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	must(t, err)
	defer probe.Close()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		req := stun.MustBuild(stun.TransactionID, stun.BindingRequest)
		for i := 0; i < 2000; i++ {
			probe.WriteToUDPAddrPort(req.Raw, a.loopback())
		}
	}()
	roundTrip(t, c, 256<<10)
	wg.Wait()
	bd := a.dev.(*goDevice).bind
	testutil.WaitFor(t, 10*time.Second, "no STUN dropped although nobody reads", func() bool { s, _ := bd.Drops(); return s > 0 })
	roundTrip(t, c, 64<<10)
}
