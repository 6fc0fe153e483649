package bind

import (
	"encoding/binary"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/pion/stun/v2"
	"go.uber.org/goleak"
	"golang.zx2c4.com/wireguard/conn"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func stunRequest(tb testing.TB) []byte {
	tb.Helper()
	m, err := stun.Build(stun.TransactionID, stun.BindingRequest, stun.Fingerprint)
	if err != nil {
		tb.Fatal(err)
	}
	return m.Raw
}

// wireguardMessages returns one of each WireGuard message type with the
// magic cookie planted where STUN has it, the worst case for IsSTUN.
func wireguardMessages() [][]byte {
	var out [][]byte
	for typ, size := range map[uint32]int{1: 148, 2: 92, 3: 64, 4: 32, 5: 1452} {
		if typ == 5 {
			typ = 4 // a full data packet
		}
		p := make([]byte, size)
		binary.LittleEndian.PutUint32(p, typ)
		binary.BigEndian.PutUint32(p[4:], stunMagicCookie)
		out = append(out, p)
	}
	return out
}

func TestIsSTUN(t *testing.T) {
	if !IsSTUN(stunRequest(t)) {
		t.Fatal("a binding request is not recognised")
	}
	for _, p := range wireguardMessages() {
		if IsSTUN(p) {
			t.Fatalf("WireGuard message of type %d and %d bytes taken for STUN", p[0], len(p))
		}
	}
	bad := stunRequest(t)
	if IsSTUN(bad[:len(bad)-4]) {
		t.Fatal("truncated STUN message accepted (length field no longer matches)")
	}
	bad[0] |= 0x80
	if IsSTUN(bad) {
		t.Fatal("first bits set but accepted")
	}
}

// TestDemuxZeroesSTUNInPlace feeds a batch through the wrapper around a fake
// receive function: STUN entries must become size 0 (and reach STUNConn),
// WireGuard entries must stay at their index with their buffer untouched.
func TestDemuxZeroesSTUNInPlace(t *testing.T) {
	b := New(Options{STUNQueue: 1})
	defer b.Stop()
	sc := b.STUNConn()
	wgs := wireguardMessages()
	req := stunRequest(t)
	batch := [][]byte{wgs[0], req, wgs[1], req, wgs[2]}
	from := netip.MustParseAddrPort("192.0.2.7:3478")
	fake := func(bufs [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
		for i, p := range batch {
			sizes[i] = copy(bufs[i], p)
			eps[i] = &conn.StdNetEndpoint{AddrPort: from}
		}
		return len(batch), nil
	}
	bufs := make([][]byte, 8)
	orig := make([]*byte, 8)
	for i := range bufs {
		bufs[i] = make([]byte, 2048)
		orig[i] = &bufs[i][0]
	}
	sizes := make([]int, 8)
	eps := make([]conn.Endpoint, 8)
	n, err := b.counted(b.demux(fake))(bufs, sizes, eps)
	if err != nil || n != len(batch) {
		t.Fatalf("n=%d err=%v", n, err)
	}
	// Traffic counts the WireGuard messages of the batch, not the STUN.
	if rx, tx := b.Traffic(); rx != uint64(len(wgs[0])+len(wgs[1])+len(wgs[2])) || tx != 0 {
		t.Fatalf("traffic rx=%d tx=%d after one batch, want rx=%d tx=0", rx, tx, len(wgs[0])+len(wgs[1])+len(wgs[2]))
	}
	for i, p := range batch {
		if &bufs[i][0] != orig[i] {
			t.Fatalf("buffer %d moved", i)
		}
		switch {
		case IsSTUN(p) && sizes[i] != 0:
			t.Fatalf("STUN at %d kept with size %d", i, sizes[i])
		case !IsSTUN(p) && (sizes[i] != len(p) || eps[i] == nil):
			t.Fatalf("WireGuard packet at %d: size %d, want %d", i, sizes[i], len(p))
		}
	}
	buf := make([]byte, 1500)
	sc.SetReadDeadline(time.Now().Add(5 * time.Second))
	m, addr, err := sc.ReadFrom(buf)
	if err != nil || m != len(req) || addr.(*net.UDPAddr).AddrPort() != from {
		t.Fatalf("STUNConn read: %d %v %v", m, addr, err)
	}
	// The queue holds one: the second STUN packet was dropped, not waited for.
	if s, _ := b.Drops(); s != 1 {
		t.Fatalf("stun drops = %d, want 1", s)
	}
	sc.SetReadDeadline(time.Now())
	if _, _, err := sc.ReadFrom(buf); err == nil || !err.(net.Error).Timeout() {
		t.Fatalf("read past deadline: %v", err)
	}
}

func TestRelayAddr(t *testing.T) {
	ap := relayAddr(7)
	if ap.String() != "[100::7]:0" {
		t.Fatalf("relay address %s", ap)
	}
	if id, ok := relayID(ap); !ok || id != 7 || !IsRelayAddr(ap.String()) {
		t.Fatal("relay address does not parse back")
	}
	if IsRelayAddr("[100::7]:1") || IsRelayAddr("192.0.2.1:0") {
		t.Fatal("ordinary address taken for a relay")
	}
}

func TestRelaySendReceiveAndStop(t *testing.T) {
	b := New(Options{})
	fns, _, err := b.Open(0)
	if err != nil {
		t.Fatal(err)
	}
	relayRecv := fns[len(fns)-1]
	c1, c2 := net.Pipe()
	defer c2.Close()
	r, err := b.Relay(c1)
	if err != nil {
		t.Fatal(err)
	}
	ep, err := b.ParseEndpoint(r.String())
	if err != nil || ep != r {
		t.Fatalf("ParseEndpoint(%s) = %v, %v", r, ep, err)
	}
	go func() { b.Send([][]byte{[]byte("hello")}, ep) }()
	got := make([]byte, 16)
	c2.SetDeadline(time.Now().Add(5 * time.Second))
	if n, err := c2.Read(got); err != nil || string(got[:n]) != "hello" {
		t.Fatalf("relay send: %q %v", got[:n], err)
	}
	go c2.Write([]byte("back"))
	bufs, sizes, eps := [][]byte{make([]byte, 64)}, make([]int, 1), make([]conn.Endpoint, 1)
	if n, err := relayRecv(bufs, sizes, eps); err != nil || n != 1 || string(bufs[0][:sizes[0]]) != "back" || eps[0] != r {
		t.Fatalf("relay receive: n=%d %q ep=%v err=%v", n, bufs[0][:sizes[0]], eps[0], err)
	}
	if rx, tx := b.Traffic(); rx != uint64(len("back")) || tx != uint64(len("hello")) {
		t.Fatalf("traffic rx=%d tx=%d, want %d and %d (relayed paths count)", rx, tx, len("back"), len("hello"))
	}
	direct := &conn.StdNetEndpoint{AddrPort: netip.MustParseAddrPort("192.0.2.1:51820")}
	r.ReceiveAs(direct)
	go c2.Write([]byte("again"))
	if _, err := relayRecv(bufs, sizes, eps); err != nil || eps[0] != direct {
		t.Fatalf("ReceiveAs not applied: %v %v", eps[0], err)
	}
	r.Stop()
	for deadline := time.Now().Add(5 * time.Second); r.Reading(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("reader still running after Stop")
		}
	}
	if _, err := b.ParseEndpoint(r.String()); err == nil {
		t.Fatal("stopped relay still parses")
	}
	if err := b.Send([][]byte{[]byte("x")}, r); err == nil {
		t.Fatal("send through a stopped relay succeeded")
	}
	b.Close()
	if _, err := relayRecv(bufs, sizes, eps); err != net.ErrClosed {
		t.Fatalf("relay receive after Close: %v, want net.ErrClosed", err)
	}
	b.Stop()
	c1.Close()
}

// BenchmarkDemux measures what the bind adds per received batch of 128
// WireGuard data packets (STUN check, claims lookup, traffic count) on top
// of StdNetBind.
func BenchmarkDemux(b *testing.B) {
	for _, claimed := range []bool{false, true} {
		b.Run(map[bool]string{false: "no-relayed-peers", true: "with-claims"}[claimed], func(b *testing.B) {
			bd := New(Options{})
			defer bd.Stop()
			if claimed {
				c1, c2 := net.Pipe()
				defer c1.Close()
				defer c2.Close()
				r, _ := bd.Relay(c1)
				bd.Claim(netip.MustParseAddrPort("192.0.2.9:1"), r)
			}
			const n = 128
			pkt := make([]byte, 1312)
			binary.LittleEndian.PutUint32(pkt, 4)
			ep := &conn.StdNetEndpoint{AddrPort: netip.MustParseAddrPort("192.0.2.1:51820")}
			fake := func(bufs [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
				for i := range n {
					sizes[i] = len(pkt)
					eps[i] = ep
				}
				return n, nil
			}
			bufs, sizes, eps := make([][]byte, n), make([]int, n), make([]conn.Endpoint, n)
			for i := range bufs {
				bufs[i] = pkt
			}
			recv := bd.counted(bd.demux(fake))
			b.ResetTimer()
			for range b.N {
				recv(bufs, sizes, eps)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/packet")
		})
	}
}

// TestOpenReceiveFuncs pins what wireguard-go allocates for the bind (agent
// memory): each ReceiveFunc that Open returns gets a routine that
// holds BatchSize message buffers of 64 KiB (8 MiB at 128) for as long as
// the bind is open. So Open returns one function per socket StdNetBind
// opened plus a single one for every relayed path, also after a relay was
// added and after a Close/Open cycle. BatchSize must stay
// conn.IdealBatchSize: it cannot be lowered to save memory, because
// StdNetBind's GRO receive reads coalesced datagrams into the last two
// entries of a batch of IdealBatchSize and splits them forward.
func TestOpenReceiveFuncs(t *testing.T) {
	std := conn.NewStdNetBind()
	stdFns, _, err := std.Open(0)
	if err != nil {
		t.Fatal(err)
	}
	std.Close()

	b := New(Options{})
	defer b.Stop()
	if got := b.BatchSize(); got != conn.IdealBatchSize {
		t.Fatalf("BatchSize %d, want conn.IdealBatchSize (%d)", got, conn.IdealBatchSize)
	}
	var relays []*RelayEndpoint
	defer func() {
		for _, r := range relays {
			r.Stop()
		}
	}()
	for cycle := range 2 {
		fns, _, err := b.Open(0)
		if err != nil {
			t.Fatal(err)
		}
		if len(fns) != len(stdFns)+1 {
			t.Fatalf("open %d (%d relays): %d receive functions, want %d (one per socket: %d, one for relayed paths)",
				cycle, len(relays), len(fns), len(stdFns)+1, len(stdFns))
		}
		c1, c2 := net.Pipe()
		t.Cleanup(func() { c1.Close(); c2.Close() })
		r, err := b.Relay(c1)
		if err != nil {
			t.Fatal(err)
		}
		relays = append(relays, r)
		if err := b.Close(); err != nil {
			t.Fatal(err)
		}
	}
}
