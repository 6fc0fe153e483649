package peerconn

import (
	"bytes"
	"context"
	"encoding/binary"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/stun/v2"
	"go.uber.org/zap"

	"meshd/internal/turncred"
	"meshd/nat/relay"
	"meshd/wg/bind"
)

// A relay session's conn is what wg/bind batches over.
var _ bind.BatchConn = (*relayConn)(nil)

// wgMessage is a fake WireGuard message: type, three zero bytes, a
// sequence number, padding to size.
func wgMessage(typ byte, seq uint32, size int) []byte {
	b := make([]byte, size)
	b[0] = typ
	binary.BigEndian.PutUint32(b[4:8], seq)
	return b
}

// meshRelay runs meshd's relay (nat/relay) on loopback.
func meshRelay(tb testing.TB) Servers {
	tb.Helper()
	secret := []byte("bench secret")
	s, err := relay.New(relay.Options{
		Log: zap.NewNop(), Secret: secret, PublicIP: netip.MustParseAddr("127.0.0.1"),
		ListenAddr: "127.0.0.1:0", Workers: 2,
	})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { s.Close() })
	c := turncred.Issue(secret, "bench", time.Now(), time.Hour)
	servers, err := ParseServers([]RelayServer{{
		URLs:     relay.URLs("127.0.0.1", int(s.UDPAddr().Port()), 0),
		Username: c.Username, Credential: c.Password,
	}})
	if err != nil {
		tb.Fatal(err)
	}
	return servers
}

// connectedRelayPair connects two relay sessions through a TURN server on
// loopback (pion's, or meshd's with mesh) and returns their conns.
func connectedRelayPair(tb testing.TB, timing *Timing, mesh bool) (a, b *end, ca, cb *relayConn) {
	tb.Helper()
	servers := turnServer(tb)
	if mesh {
		servers = meshRelay(tb)
	}
	// TURN over UDP only: a TCP allocation's pair has no fast path.
	udp := servers.TURN[:0:0]
	for _, u := range servers.TURN {
		if u.Proto == stun.ProtoTypeUDP {
			udp = append(udp, u)
		}
	}
	servers.TURN = udp
	a, b = pair(tb, Relay, servers, false)
	a.timing, b.timing = timing, timing
	s := a.newSession(21)
	b.receive(offer(s))
	if err := s.Gather(); err != nil {
		tb.Fatal(err)
	}
	if p := waitPair(tb, a); p.Local.Type != "relay" {
		tb.Fatalf("pair %v is not relayed", p)
	}
	waitPair(tb, b)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	x, err := s.WaitConn(ctx)
	if err != nil {
		tb.Fatal(err)
	}
	y, err := b.session().WaitConn(ctx)
	if err != nil {
		tb.Fatal(err)
	}
	var ok bool
	if ca, ok = x.(*relayConn); !ok {
		tb.Fatalf("relay session conn is %T", x)
	}
	if cb, ok = y.(*relayConn); !ok {
		tb.Fatalf("relay session conn is %T", y)
	}
	return a, b, ca, cb
}

// collector gathers what a Receive hands over, copied.
type collector chan []byte

func (c collector) fn(msgs [][]byte) {
	for _, m := range msgs {
		c <- append([]byte(nil), m...)
	}
}

func (c collector) next(tb testing.TB) []byte {
	tb.Helper()
	select {
	case m := <-c:
		return m
	case <-time.After(5 * time.Second):
		tb.Fatal("no message in 5s")
		return nil
	}
}

// waitFastRoute polls until ca's selected pair has a fast route (pion
// binds the channel after its first checks, the server confirms it a
// moment later).
func waitFastRoute(tb testing.TB, ca *relayConn) {
	tb.Helper()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if _, _, _, ok := ca.s.fastRoute(); ok {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatal("the selected pair never got a fast route (channel binding not seen)")
		}
	}
}

// WireGuard messages go both ways over the fast path in batches, in order,
// while pion's own path still carries everything else; with batch reads
// (Linux) and without (the other systems).
func TestRelayFastPath(t *testing.T) {
	for _, batch := range []bool{true, false} {
		t.Run(map[bool]string{true: "recvmmsg", false: "single-reads"}[batch], func(t *testing.T) {
			old := batchReads
			batchReads = batch // read by the sockets as they are made
			t.Cleanup(func() { batchReads = old })
			testRelayFastPath(t)
		})
	}
}

func testRelayFastPath(t *testing.T) {
	_, _, ca, cb := connectedRelayPair(t, nil, false)
	gotB, gotA := make(collector, 1024), make(collector, 1024)
	cancelB := cb.Receive(1500, gotB.fn)
	defer cancelB()
	cancelA := ca.Receive(1500, gotA.fn)
	defer cancelA()
	waitFastRoute(t, ca)
	waitFastRoute(t, cb)

	out0, _ := ca.FastCounts()
	_, in0 := cb.FastCounts()
	// A bulk batch as WireGuard sends it: equal sizes (one GSO write),
	// a shorter one that ends it, then a larger one that starts another;
	// an odd size needs ChannelData padding.
	var batch [][]byte
	for i := range 60 {
		batch = append(batch, wgMessage(4, uint32(i), 1312))
	}
	batch = append(batch, wgMessage(4, 60, 96), wgMessage(1, 61, 148), wgMessage(4, 62, 1312), wgMessage(4, 63, 1001))
	if err := ca.WriteBatch(batch); err != nil {
		t.Fatal(err)
	}
	for i, want := range batch {
		if got := gotB.next(t); !bytes.Equal(got, want) {
			t.Fatalf("message %d: got %d bytes %x..., want %d bytes %x...", i, len(got), got[:8], len(want), want[:8])
		}
	}
	if out, _ := ca.FastCounts(); out-out0 != uint64(len(batch)) {
		t.Fatalf("a sent %d messages by the fast path, want %d", out-out0, len(batch))
	}
	if _, in := cb.FastCounts(); in-in0 != uint64(len(batch)) {
		t.Fatalf("b received %d messages by the fast path, want %d", in-in0, len(batch))
	}

	// The other way.
	back := [][]byte{wgMessage(4, 1, 80), wgMessage(2, 2, 92)}
	if err := cb.WriteBatch(back); err != nil {
		t.Fatal(err)
	}
	for i, want := range back {
		if got := gotA.next(t); !bytes.Equal(got, want) {
			t.Fatalf("back %d: got %x, want %x", i, got, want)
		}
	}

	// What is not a WireGuard message still goes through pion to Read.
	if _, err := ca.Write([]byte("not wireguard")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1500)
	cb.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := cb.Read(buf)
	if err != nil || string(buf[:n]) != "not wireguard" {
		t.Fatalf("read %q, %v", buf[:n], err)
	}

	// Without a receiver, WireGuard messages come from Read again.
	cancelB()
	msg := wgMessage(4, 99, 200)
	if err := ca.WriteBatch([][]byte{msg}); err != nil {
		t.Fatal(err)
	}
	cb.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err = cb.Read(buf)
	if err != nil || !bytes.Equal(buf[:n], msg) {
		t.Fatalf("after cancel: read %d bytes, %v", n, err)
	}
	select {
	case m := <-gotB:
		t.Fatalf("the cancelled receiver got %x", m[:8])
	default:
	}
}

// A cancel from an earlier Receive does not remove a later receiver.
func TestRelayReceiveCancelIsOwn(t *testing.T) {
	_, _, ca, cb := connectedRelayPair(t, nil, false)
	old, cur := make(collector, 16), make(collector, 16)
	cancelOld := cb.Receive(1500, old.fn)
	cancelCur := cb.Receive(1500, cur.fn)
	defer cancelCur()
	cancelOld()
	waitFastRoute(t, ca)
	msg := wgMessage(4, 7, 64)
	if err := ca.WriteBatch([][]byte{msg}); err != nil {
		t.Fatal(err)
	}
	if got := cur.next(t); !bytes.Equal(got, msg) {
		t.Fatalf("got %x", got)
	}
}

// While only the fast path carries data, pion's consent checks keep the
// session connected: nothing of pion's is starved.
func TestRelayFastPathKeepsSessionAlive(t *testing.T) {
	fast := RelayTiming
	fast.Keepalive, fast.Disconnected, fast.Failed = 50*time.Millisecond, 400*time.Millisecond, 400*time.Millisecond
	a, b, ca, cb := connectedRelayPair(t, &fast, false)
	got := make(collector, 4096)
	defer cb.Receive(1500, got.fn)()
	waitFastRoute(t, ca)
	for _, e := range []*end{a, b} { // the states of the setup
		for len(e.states) > 0 {
			<-e.states
		}
	}
	_, in0 := cb.FastCounts()
	until := time.Now().Add(1500 * time.Millisecond) // several Disconnected timeouts
	sent := 0
	for time.Now().Before(until) {
		if err := ca.WriteBatch([][]byte{wgMessage(4, uint32(sent), 256)}); err != nil {
			t.Fatal(err)
		}
		sent++
		select {
		case <-got:
		case <-time.After(time.Second):
			t.Fatalf("message %d lost", sent)
		}
		for _, e := range []*end{a, b} {
			select {
			case st := <-e.states:
				if st != Connected {
					t.Fatalf("session went %v while the fast path carried data", st)
				}
			default:
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	if _, in := cb.FastCounts(); in-in0 != uint64(sent) {
		t.Fatalf("%d of %d messages came by the fast path", in-in0, sent)
	}
	for _, e := range []*end{a, b} {
		if _, ok := e.session().Selected(); !ok {
			t.Fatal("session not connected after the run")
		}
	}
	t.Logf("%d messages over %v by the fast path; both sessions stayed connected", sent, 1500*time.Millisecond)
}

// A datagram larger than the receiver's read buffers is dropped and
// counted, and the reader goes on with the next one.
func TestRelayFastPathDropsOversize(t *testing.T) {
	if !batchReads {
		t.Skip("single reads use pion's buffer: nothing is cut")
	}
	_, _, ca, cb := connectedRelayPair(t, nil, false)
	got := make(collector, 16)
	defer cb.Receive(minReadMessage, got.fn)()
	waitFastRoute(t, ca)
	// pion's reader may sit in a plain read (pion's 64 KiB buffer) begun
	// before Receive: one message ends it, the next reads are batches.
	probe := wgMessage(4, 0, 64)
	if err := ca.WriteBatch([][]byte{probe}); err != nil {
		t.Fatal(err)
	}
	if m := got.next(t); !bytes.Equal(m, probe) {
		t.Fatalf("got %d bytes, want the probe", len(m))
	}
	// Larger than the buffers, smaller than what pion's TURN server reads
	// (1600 bytes).
	big, small := wgMessage(4, 1, minReadMessage+readSlack+4), wgMessage(4, 2, 64)
	if err := ca.WriteBatch([][]byte{big, small}); err != nil {
		t.Fatal(err)
	}
	if m := got.next(t); !bytes.Equal(m, small) {
		t.Fatalf("got %d bytes, want the small message", len(m))
	}
	n := uint64(0)
	for _, s := range cb.s.rnet.sockets() {
		n += s.truncated.Load()
	}
	if n != 1 {
		t.Fatalf("%d datagrams counted as cut, want 1", n)
	}
}

// A relay socket reads batches only while WireGuard messages come: the
// first one starts them, a batch without any (an idle tunnel: consent
// checks, TURN refreshes) gives the buffers back, the next one starts them
// again.
func TestRelayReadsBatchesOnlyWhileBusy(t *testing.T) {
	if !batchReads {
		t.Skip("no batch reads on this system")
	}
	_, _, ca, cb := connectedRelayPair(t, nil, false)
	got := make(collector, 256)
	defer cb.Receive(1500, got.fn)()
	socks := cb.s.rnet.sockets()
	if len(socks) != 1 {
		t.Fatalf("%d TURN/UDP sockets, want 1", len(socks))
	}
	sock := socks[0]
	if sock.batching.Load() {
		t.Fatal("batch reads before any WireGuard message")
	}
	waitFastRoute(t, ca)
	poll := func(what string, ok func() bool) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); !ok(); time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatal(what)
			}
		}
	}
	first := wgMessage(4, 1, 64)
	if err := ca.WriteBatch([][]byte{first}); err != nil {
		t.Fatal(err)
	}
	if m := got.next(t); !bytes.Equal(m, first) {
		t.Fatalf("got %x", m[:8])
	}
	poll("no batch reads after a WireGuard message", func() bool { return sock.batchStarts.Load() >= 1 })

	if _, err := ca.Write([]byte("not wireguard")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1500)
	cb.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := cb.Read(buf); err != nil || string(buf[:n]) != "not wireguard" {
		t.Fatalf("read %q, %v", buf[:n], err)
	}
	poll("still reading batches after one without WireGuard", func() bool { return !sock.batching.Load() })

	starts := sock.batchStarts.Load()
	var batch [][]byte
	for i := range 64 {
		batch = append(batch, wgMessage(4, uint32(100+i), 1200))
	}
	if err := ca.WriteBatch(batch); err != nil {
		t.Fatal(err)
	}
	for i, want := range batch {
		if m := got.next(t); !bytes.Equal(m, want) {
			t.Fatalf("message %d: got %x, want %x", i, m[:8], want[:8])
		}
	}
	poll("no batch reads again with traffic", func() bool { return sock.batchStarts.Load() > starts })
}

func TestWireGuardPayload(t *testing.T) {
	cd := func(ch uint16, p []byte) []byte {
		b := binary.BigEndian.AppendUint16(nil, ch)
		b = binary.BigEndian.AppendUint16(b, uint16(len(p)))
		return append(b, p...)
	}
	stunReq := []byte{0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}
	stunOK := append([]byte{0x01, 0x01}, stunReq[2:]...)
	for _, tc := range []struct {
		name string
		d    []byte
		ok   bool
	}{
		{"data", cd(0x4000, wgMessage(4, 1, 64)), true},
		{"handshake", cd(0x4001, wgMessage(1, 1, 148)), true},
		{"padded", append(cd(0x4000, wgMessage(4, 1, 33)), 0, 0, 0), true},
		{"stun request", cd(0x4000, stunReq), false},
		{"stun response", cd(0x4000, stunOK), false},
		{"type 5", cd(0x4000, wgMessage(5, 1, 64)), false},
		{"not channel data", wgMessage(4, 1, 64), false},
		{"short", cd(0x4000, wgMessage(4, 1, 64))[:40], false},
		{"tiny", cd(0x4000, []byte{4, 0, 0}), false},
	} {
		p, ok := wireGuardPayload(tc.d)
		if ok != tc.ok {
			t.Errorf("%s: ok=%v, want %v", tc.name, ok, tc.ok)
		}
		if ok && p[0] != tc.d[4] {
			t.Errorf("%s: payload %x", tc.name, p[:4])
		}
	}
}

// BenchmarkRelayFastPath: WireGuard-sized messages through meshd's relay
// on loopback, in batches of 64, by the fast path and by pion's
// path (WriteBatch over a conn whose channel is unknown falls back to
// pion's per-message writes; Read on the other side).
func BenchmarkRelayFastPath(b *testing.B) {
	for _, fast := range []bool{true, false} {
		b.Run(map[bool]string{true: "fast", false: "pion"}[fast], func(b *testing.B) {
			_, _, ca, cb := connectedRelayPair(b, nil, true)
			const size, batch = 1312, 64
			got := make(chan int, 1<<16)
			if fast {
				defer cb.Receive(1500, func(msgs [][]byte) { got <- len(msgs) })()
				waitFastRoute(b, ca)
			} else {
				go func() {
					buf := make([]byte, 2048)
					for {
						_ = cb.SetReadDeadline(time.Now().Add(2 * time.Second))
						if _, err := cb.Read(buf); err != nil {
							close(got)
							return
						}
						got <- 1
					}
				}()
			}
			msgs := make([][]byte, batch)
			for i := range msgs {
				msgs[i] = wgMessage(4, uint32(i), size)
			}
			write := ca.WriteBatch
			if !fast {
				write = func(bufs [][]byte) error {
					for _, p := range bufs {
						if _, err := ca.Conn.Write(p); err != nil {
							return err
						}
					}
					return nil
				}
			}
			b.SetBytes(size)
			b.ResetTimer()
			recv, sent := 0, 0
			for sent < b.N {
				n := min(batch, b.N-sent)
				if err := write(msgs[:n]); err != nil {
					b.Fatal(err)
				}
				sent += n
				for recv < sent-4*batch { // a window, so loopback does not drop
					select {
					case k, ok := <-got:
						if !ok {
							b.Fatal("reader ended")
						}
						recv += k
					case <-time.After(time.Second):
						b.Fatalf("stalled at %d of %d received", recv, sent)
					}
				}
			}
			b.ReportMetric(float64(recv)/float64(max(sent, 1))*100, "%received")
		})
	}
}

// The socket learns channels from what pion sends and the server answers:
// a ChannelBind is used once the server confirmed it, no longer after an
// error answer, and not after channelLifetime without a fresh confirmation.
func TestTurnSocketChannelFreshness(t *testing.T) {
	uc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	s := newTurnSocket(uc, new(atomic.Pointer[receiver]), nil)
	defer s.Close()
	server := netip.MustParseAddrPort("192.0.2.1:3478")
	peer := netip.MustParseAddrPort("198.51.100.7:40000")
	build := func(tb testing.TB, id [stun.TransactionIDSize]byte, t stun.MessageType, setters ...stun.Setter) []byte {
		tb.Helper()
		m, err := stun.Build(append([]stun.Setter{stun.NewTransactionIDSetter(id), t}, setters...)...)
		if err != nil {
			tb.Fatal(err)
		}
		return m.Raw
	}
	bind := func(id [stun.TransactionIDSize]byte, ch uint16) []byte {
		return build(t, id, stun.NewType(stun.MethodChannelBind, stun.ClassRequest),
			stun.RawAttribute{Type: stun.AttrChannelNumber, Value: []byte{byte(ch >> 8), byte(ch), 0, 0}},
			&xorPeer{stun.XORMappedAddress{IP: peer.Addr().AsSlice(), Port: int(peer.Port())}})
	}
	answer := func(id [stun.TransactionIDSize]byte, c stun.MessageClass) []byte {
		return build(t, id, stun.NewType(stun.MethodChannelBind, c))
	}
	alloc := build(t, [12]byte{9}, stun.NewType(stun.MethodAllocate, stun.ClassRequest))

	s.sniffOut(alloc, server)
	if _, _, ok := s.route(peer); ok {
		t.Fatal("a route before any ChannelBind")
	}
	s.sniffOut(bind([12]byte{1}, 0x4001), server)
	if _, _, ok := s.route(peer); ok {
		t.Fatal("a route before the server answered")
	}
	s.sniffIn(answer([12]byte{1}, stun.ClassSuccessResponse), netip.MustParseAddrPort("192.0.2.99:3478"))
	if _, _, ok := s.route(peer); ok {
		t.Fatal("an answer from another address than the server confirmed the channel")
	}
	s.sniffIn(answer([12]byte{1}, stun.ClassSuccessResponse), server)
	to, ch, ok := s.route(peer)
	if !ok || ch != 0x4001 || to != server {
		t.Fatalf("route %v %#x %v, want channel 0x4001 to %v", to, ch, ok, server)
	}

	// Old confirmation: not used any more; a refresh confirms it again.
	s.mu.Lock()
	s.channels[peer] = channel{num: 0x4001, at: time.Now().Add(-channelLifetime - time.Second)}
	s.mu.Unlock()
	if _, _, ok := s.route(peer); ok {
		t.Fatal("a channel confirmed longer than channelLifetime ago is used")
	}
	s.sniffOut(bind([12]byte{2}, 0x4001), server)
	s.sniffIn(answer([12]byte{2}, stun.ClassSuccessResponse), server)
	if _, _, ok := s.route(peer); !ok {
		t.Fatal("a refreshed channel is not used")
	}

	// An error answer to a refresh ends the route.
	s.sniffOut(bind([12]byte{3}, 0x4001), server)
	s.sniffIn(answer([12]byte{3}, stun.ClassErrorResponse), server)
	if _, _, ok := s.route(peer); ok {
		t.Fatal("a channel is used after the server refused its refresh")
	}
}

// xorPeer adds an XOR-PEER-ADDRESS.
type xorPeer struct{ stun.XORMappedAddress }

func (a *xorPeer) AddTo(m *stun.Message) error { return a.AddToAs(m, stun.AttrXORPeerAddress) }
