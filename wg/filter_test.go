package wg

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/tun"

	controlv1 "meshd/api/control/v1"
	"meshd/internal/filter"
)

// rulesFilter compiles firewall rules the way the engine does.
func rulesFilter(tb testing.TB, rules ...*controlv1.FirewallRule) *filter.Filter {
	tb.Helper()
	r, err := filter.Compile(rules)
	must(tb, err)
	return filter.New(r)
}

func tcpRule(peer netip.Addr, dir controlv1.Direction, port uint32) *controlv1.FirewallRule {
	return &controlv1.FirewallRule{PeerIp: peer.String(), Direction: dir, Protocol: controlv1.Protocol_PROTOCOL_TCP,
		Ports: []*controlv1.PortRange{{Start: port}}}
}

// TestFilterEnforcesRules protects b with a map that lets a in on TCP 443
// only and lets b open TCP 8080 on a: 443 passes, 22 and ICMP do not, and
// the replies to b's own connection to a pass.
func TestFilterEnforcesRules(t *testing.T) {
	a := newNode(t, 1)
	b := newNodeWith(t, 2, func(c *Config) {
		c.Filter = rulesFilter(t,
			tcpRule(netip.MustParseAddr("100.64.0.1"), controlv1.Direction_DIRECTION_IN, 443),
			tcpRule(netip.MustParseAddr("100.64.0.1"), controlv1.Direction_DIRECTION_OUT, 8080))
	})
	link(t, a, b)
	echoServer(t, b, 443)
	echoServer(t, b, 22)
	echoServer(t, a, 8080)
	echoServer(t, a, 9)

	roundTrip(t, dial(t, a, b, 443), 256<<10)

	if c, err := tryDial(a, b, 22, time.Second); err == nil {
		c.Close()
		t.Fatal("a reached b's port 22, which no rule allows")
	}
	if err := pingOnce(a, b.addr, 500*time.Millisecond); err == nil {
		t.Fatal("a pinged b, which no rule allows")
	}
	if got := b.dev.Counters().FilteredIn; got == 0 {
		t.Fatal("b's counters show no packet denied on the way in")
	}

	// b opens a connection to a (its OUT rule): a's answers come back in.
	roundTrip(t, dial(t, b, a, 8080), 256<<10)
	// No OUT rule for port 9: b's SYN never leaves.
	before := b.dev.Counters().FilteredOut
	if c, err := tryDial(b, a, 9, time.Second); err == nil {
		c.Close()
		t.Fatal("b reached a's port 9, which no rule allows")
	}
	if b.dev.Counters().FilteredOut == before {
		t.Fatal("b's counters show no packet denied on the way out")
	}
	// The connection allowed first still works after the denials.
	roundTrip(t, dial(t, a, b, 443), 64<<10)
}

// TestFilterWithoutRulesAllowsAll: a map without rules cuts nothing.
func TestFilterWithoutRulesAllowsAll(t *testing.T) {
	a := newNode(t, 1)
	b := newNodeWith(t, 2, func(c *Config) { c.Filter = rulesFilter(t) })
	link(t, a, b)
	echoServer(t, b, 22)
	roundTrip(t, dial(t, a, b, 22), 64<<10)
	must(t, pingOnce(a, b.addr, 5*time.Second))
	if c := b.dev.Counters(); c.FilteredIn != 0 || c.FilteredOut != 0 {
		t.Fatalf("counters %+v", c)
	}
}

func tryDial(a, b *node, port uint16, d time.Duration) (interface{ Close() error }, error) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	return a.dev.Net().DialContextTCPAddrPort(ctx, netip.AddrPortFrom(b.addr, port))
}

// pingOnce sends one echo request from a to dst and waits up to d.
func pingOnce(a *node, dst netip.Addr, d time.Duration) error {
	c, err := a.dev.Net().DialPingAddr(netip.Addr{}, dst)
	if err != nil {
		return err
	}
	defer c.Close()
	if _, err := c.Write([]byte{8, 0, 0, 0, 0, 1, 0, 1, 'm', 'e', 's', 'h', 'd'}); err != nil {
		return err
	}
	c.SetReadDeadline(time.Now().Add(d))
	buf := make([]byte, 1500)
	_, err = c.Read(buf)
	return err
}

// recTUN is a tun.Device that hands out queued packets and records writes.
type recTUN struct {
	tun.Device // nil: only Read and Write are used
	reads      [][]byte
	written    [][]byte
}

func (r *recTUN) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	n := 0
	for ; n < len(bufs) && len(r.reads) > 0; n++ {
		sizes[n] = copy(bufs[n][offset:], r.reads[0])
		r.reads = r.reads[1:]
	}
	if n == 0 {
		return 0, os.ErrClosed
	}
	return n, nil
}

func (r *recTUN) Write(bufs [][]byte, offset int) (int, error) {
	for _, b := range bufs {
		r.written = append(r.written, slices.Clone(b[offset:]))
	}
	return len(bufs), nil
}

// firstByteFilter allows packets whose byte 1 (the IPv4 TOS, here a
// marker) is odd, and records what it saw.
type firstByteFilter struct{ seen []string }

func (f *firstByteFilter) Allow(p []byte, inbound bool) bool {
	f.seen = append(f.seen, fmt.Sprintf("%d/%v", p[1], inbound))
	return p[1]%2 == 1
}

// TestFilteredTUNBatches checks the wrapper on batches, as the Linux TUN
// with offloads hands them over (several packets per call, at an offset).
func TestFilteredTUNBatches(t *testing.T) {
	const offset = 16
	pkt := func(mark byte) []byte { return []byte{0x45, mark, 0, 20, 0, 0, 0, 0, 64, 6} }
	f := &firstByteFilter{}
	rec := &recTUN{reads: [][]byte{pkt(1), pkt(2), pkt(3), pkt(4)}}
	ft := newFilteredTUN(rec, f)

	bufs := make([][]byte, 4)
	for i := range bufs {
		bufs[i] = make([]byte, 64)
	}
	sizes := make([]int, 4)
	n, err := ft.Read(bufs, sizes, offset)
	must(t, err)
	if n != 4 || !slices.Equal(sizes, []int{10, 0, 10, 0}) {
		t.Fatalf("read n=%d sizes=%v, want 4 packets with the even ones zeroed", n, sizes)
	}

	var in [][]byte
	for _, m := range []byte{2, 5, 6, 7, 9} {
		b := make([]byte, offset, 64)
		in = append(in, append(b, pkt(m)...))
	}
	_, err = ft.Write(in, offset)
	must(t, err)
	var marks []byte
	for _, w := range rec.written {
		marks = append(marks, w[1])
	}
	if !slices.Equal(marks, []byte{5, 7, 9}) {
		t.Fatalf("written %v, want the allowed packets 5, 7, 9 in order", marks)
	}
	if want := []string{"1/false", "2/false", "3/false", "4/false", "2/true", "5/true", "6/true", "7/true", "9/true"}; !slices.Equal(f.seen, want) {
		t.Fatalf("filter saw %v, want %v", f.seen, want)
	}
	if ft.droppedIn.Load() != 2 || ft.droppedOut.Load() != 2 {
		t.Fatalf("drops in %d out %d", ft.droppedIn.Load(), ft.droppedOut.Load())
	}
	rec.written = nil
	_, err = ft.Write([][]byte{append(make([]byte, offset), pkt(2)...)}, offset)
	if err != nil || rec.written != nil {
		t.Fatalf("a batch with nothing allowed reached the TUN: %v %v", rec.written, err)
	}
	if _, err := ft.Read(bufs, sizes, offset); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("read error not passed on: %v", err)
	}
}

// nullTUN swallows writes and hands out the same batch on every read.
type nullTUN struct {
	tun.Device
	batch [][]byte
}

func (n *nullTUN) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	for i, p := range n.batch {
		sizes[i] = copy(bufs[i][offset:], p)
	}
	return len(n.batch), nil
}

func (n *nullTUN) Write(bufs [][]byte, offset int) (int, error) { return len(bufs), nil }

// tcpPacket is an IPv4 TCP segment of size bytes (ACK set).
func tcpPacket(src, dst netip.Addr, sport, dport uint16, size int) []byte {
	p := make([]byte, size)
	p[0], p[9] = 0x45, 6
	p[2], p[3] = byte(size>>8), byte(size)
	copy(p[12:16], src.AsSlice())
	copy(p[16:20], dst.AsSlice())
	p[20], p[21], p[22], p[23] = byte(sport>>8), byte(sport), byte(dport>>8), byte(dport)
	p[32], p[33] = 0x50, 0x10
	return p
}

// BenchmarkFilteredTUN is the filter's cost on the data path per packet:
// batches of 64 MTU-sized TCP segments of one flow through the wrapper,
// both ways, with no filter, with a map without rules (allow all) and with
// a TCP-port rule (the flow is looked up in the flow table every time).
func BenchmarkFilteredTUN(b *testing.B) {
	self, peer := netip.MustParseAddr("100.64.0.1"), netip.MustParseAddr("100.64.0.2")
	const offset, batch, size = 16, 64, 1280
	out := make([][]byte, batch) // to the peer: data of a connection we opened
	in := make([][]byte, batch)  // from the peer: its answers
	for i := range out {
		out[i] = tcpPacket(self, peer, 40000, 443, size)
		in[i] = append(make([]byte, offset), tcpPacket(peer, self, 443, 40000, size)...)
	}
	for _, bc := range []struct {
		name string
		f    PacketFilter
	}{
		{"none", nil},
		{"no-rules", rulesFilter(b)},
		{"tcp-rule", rulesFilter(b, tcpRule(peer, controlv1.Direction_DIRECTION_OUT, 443), tcpRule(peer, controlv1.Direction_DIRECTION_IN, 22))},
	} {
		b.Run(bc.name, func(b *testing.B) {
			var dev tun.Device = &nullTUN{batch: out}
			if bc.f != nil {
				dev = newFilteredTUN(dev, bc.f)
			}
			bufs := make([][]byte, batch)
			for i := range bufs {
				bufs[i] = make([]byte, offset+size)
			}
			sizes := make([]int, batch)
			wbufs := make([][]byte, batch)
			b.SetBytes(2 * batch * size)
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				if n, _ := dev.Read(bufs, sizes, offset); n != batch || sizes[batch-1] != size {
					b.Fatalf("read %d, last size %d", n, sizes[batch-1])
				}
				copy(wbufs, in)
				if n, _ := dev.Write(wbufs, offset); n != batch {
					b.Fatalf("wrote %d of %d", n, batch)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*2*batch), "ns/packet")
		})
	}
}
