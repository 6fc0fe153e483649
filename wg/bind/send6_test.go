package bind

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"testing"
	"time"

	"github.com/vishvananda/netns"
	"golang.zx2c4.com/wireguard/conn"

	"meshd/internal/sockbuf"
)

// sendAlternating sends through b alternately to r4 (IPv4) and r6 (IPv6),
// single packets and batches: every datagram must reach its own peer.
func sendAlternating(t *testing.T, b *Bind, r4, r6 *net.UDPConn) {
	t.Helper()
	ep4, err := b.ParseEndpoint(r4.LocalAddr().String())
	must(t, err)
	ep6, err := b.ParseEndpoint(r6.LocalAddr().String())
	must(t, err)
	buf := make([]byte, 100)
	expect := func(r *net.UDPConn, p []byte, what string) {
		t.Helper()
		r.SetReadDeadline(time.Now().Add(2 * time.Second))
		n, _, err := r.ReadFromUDPAddrPort(buf)
		if err != nil {
			t.Fatalf("%s: nothing arrived at %s: %v", what, r.LocalAddr(), err)
		}
		if !bytes.Equal(buf[:n], p) {
			t.Fatalf("%s: %s got %x, want %x", what, r.LocalAddr(), buf[:n], p)
		}
	}
	for i := 0; i < 20; i++ {
		for _, c := range []struct {
			ep conn.Endpoint
			r  *net.UDPConn
		}{{ep4, r4}, {ep6, r6}} {
			p := []byte{4, 0, 0, 0, byte(i), 'm', 'e', 's', 'h', 'd'}
			must(t, b.Send([][]byte{p}, c.ep))
			expect(c.r, p, fmt.Sprintf("round %d", i))
		}
	}
	batch := [][]byte{{4, 0, 0, 0, 1}, {4, 0, 0, 0, 2}, {4, 0, 0, 0, 3}}
	for _, c := range []struct {
		ep conn.Endpoint
		r  *net.UDPConn
	}{{ep4, r4}, {ep6, r6}, {ep4, r4}, {ep6, r6}} {
		must(t, b.Send(batch, c.ep))
		for i, p := range batch {
			expect(c.r, p, fmt.Sprintf("batch packet %d", i))
		}
	}
}

// TestSendIPv6AfterIPv4 runs sendAlternating over loopback. wireguard-go's
// StdNetBind.Send (the version in go.mod) reuses pooled addresses and,
// after an IPv4 send, copies only the first 4 bytes of the next IPv6
// destination, keeping the other 12 of an earlier one: the datagram goes
// to a wrong address. Towards ::1 that goes unnoticed (the wrong address is
// ::, which Linux sends to ::1 anyway); TestSendIPv6AfterIPv4Routed shows
// it.
func TestSendIPv6AfterIPv4(t *testing.T) {
	if c, err := net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6loopback}); err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	} else {
		c.Close()
	}
	b := New(Options{})
	if _, _, err := b.Open(0); err != nil {
		t.Fatal(err)
	}
	defer func() { b.Close(); b.Stop() }()
	if b.v6.Load() == nil {
		t.Fatal("no IPv6 sender: has StdNetBind changed (see send6.go)?")
	}
	r4, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	must(t, err)
	defer r4.Close()
	r6, err := net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6loopback})
	must(t, err)
	defer r6.Close()
	sendAlternating(t, b, r4, r6)
}

// TestSendIPv6AfterIPv4Routed is sendAlternating towards an IPv6 address
// other than ::1 (fd6d::1 on the loopback of a namespace the test makes),
// the case where the agent lost WireGuard handshakes on IPv6 host paths
// (ICE's STUN to the relay went over IPv4 from the same socket). Needs
// root.
func TestSendIPv6AfterIPv4Routed(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (a network namespace)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("no ip(8)")
	}
	name := fmt.Sprintf("mwb%d", os.Getpid()%100000)
	for _, args := range [][]string{
		{"netns", "add", name},
		{"-n", name, "link", "set", "lo", "up"},
		{"-n", name, "addr", "add", "fd6d::1/128", "dev", "lo", "nodad"},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			exec.Command("ip", "netns", "del", name).Run()
			t.Fatalf("ip %v: %v\n%s", args, err, out)
		}
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })

	// Sockets belong to the namespace of the thread that makes them.
	b := New(Options{})
	var r4, r6, probe *net.UDPConn
	func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		must(t, err)
		defer orig.Close()
		ns, err := netns.GetFromName(name)
		must(t, err)
		defer ns.Close()
		must(t, netns.Set(ns))
		defer func() {
			if err := netns.Set(orig); err == nil {
				runtime.UnlockOSThread() // else the thread dies with the goroutine
			}
		}()
		_, _, err = b.Open(0)
		must(t, err)
		r4, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		must(t, err)
		r6, err = net.ListenUDP("udp6", &net.UDPAddr{IP: net.ParseIP("fd6d::1")})
		must(t, err)
		probe, err = net.ListenUDP("udp6", &net.UDPAddr{IP: net.ParseIP("fd6d::1")})
		must(t, err)
	}()
	defer probe.Close()
	// The fresh namespace sometimes loses the very first datagram to its
	// new address: wait until a plain socket's gets through.
	for i := 0; ; i++ {
		probe.WriteTo([]byte("probe"), r6.LocalAddr())
		r6.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		if _, _, err := r6.ReadFromUDPAddrPort(make([]byte, 10)); err == nil {
			break
		}
		if i == 50 {
			t.Fatal("no IPv6 datagram reaches fd6d::1 in the test namespace")
		}
	}
	defer func() { b.Close(); b.Stop() }()
	defer r4.Close()
	defer r6.Close()
	sendAlternating(t, b, r4, r6)
}

func must(tb testing.TB, err error) {
	tb.Helper()
	if err != nil {
		tb.Fatal(err)
	}
}

// TestSendIPv6GSO: batches towards an IPv6 peer go out as UDP GSO runs
// (equal sizes, the last of a run may be shorter; at most 64 segments and
// 64 KiB a run) and arrive at [::1] intact and in order, interleaved with
// IPv4 sends as in TestSendIPv6AfterIPv4.
func TestSendIPv6GSO(t *testing.T) {
	if c, err := net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6loopback}); err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	} else {
		c.Close()
	}
	b := New(Options{})
	if _, _, err := b.Open(0); err != nil {
		t.Fatal(err)
	}
	defer func() { b.Close(); b.Stop() }()
	s6 := b.v6.Load()
	if s6 == nil {
		t.Fatal("no IPv6 sender: has StdNetBind changed (see send6.go)?")
	}
	if !s6.gso.Load() {
		t.Skip("the kernel has no UDP GSO")
	}
	r4, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	must(t, err)
	defer r4.Close()
	r6, err := net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6loopback})
	must(t, err)
	defer r6.Close()
	sockbuf.Set(r6, 8<<20) // a whole batch arrives before the test reads
	ep4, err := b.ParseEndpoint(r4.LocalAddr().String())
	must(t, err)
	ep6, err := b.ParseEndpoint(r6.LocalAddr().String())
	must(t, err)

	packets := func(sizes ...int) [][]byte {
		var out [][]byte
		for i, n := range sizes {
			p := make([]byte, n)
			for j := range p {
				p[j] = byte(i*7 + j)
			}
			out = append(out, p)
		}
		return out
	}
	repeat := func(n, size int, tail ...int) []int {
		s := make([]int, n)
		for i := range s {
			s[i] = size
		}
		return append(s, tail...)
	}
	buf := make([]byte, 2048)
	for _, tt := range []struct {
		name  string
		sizes []int
		gso   uint64 // GSO sends it takes
	}{
		{"a run and a shorter last packet", repeat(40, 1200, 700), 1},
		{"singles around a run", []int{100, 1200, 1200, 1200, 50, 50}, 1},
		{"a run over 64 KiB", repeat(100, 1200), 2},
		{"more than 64 segments", repeat(100, 200), 2},
		{"one packet", []int{1400}, 0},
	} {
		batch := packets(tt.sizes...)
		before := s6.gsoSends.Load()
		must(t, b.Send([][]byte{{4, 0, 0, 0, 9}}, ep4)) // an IPv4 send first, as ICE's STUN does
		must(t, b.Send(batch, ep6))
		if got := s6.gsoSends.Load() - before; got != tt.gso {
			t.Errorf("%s: %d GSO sends, want %d", tt.name, got, tt.gso)
		}
		for i, p := range batch {
			r6.SetReadDeadline(time.Now().Add(2 * time.Second))
			n, _, err := r6.ReadFromUDPAddrPort(buf)
			if err != nil {
				t.Fatalf("%s: packet %d of %d did not arrive: %v", tt.name, i, len(batch), err)
			}
			if !bytes.Equal(buf[:n], p) {
				t.Fatalf("%s: packet %d: got %d bytes, want %d (%x...)", tt.name, i, n, len(p), buf[:min(n, 8)])
			}
		}
		r4.SetReadDeadline(time.Now().Add(2 * time.Second))
		if _, _, err := r4.ReadFromUDPAddrPort(buf); err != nil {
			t.Fatalf("%s: the IPv4 packet did not arrive: %v", tt.name, err)
		}
	}
}

// gsoRun cuts runs where GSO needs them cut.
func TestGSORun(t *testing.T) {
	sized := func(sizes ...int) [][]byte {
		out := make([][]byte, len(sizes))
		for i, n := range sizes {
			out[i] = make([]byte, n)
		}
		return out
	}
	for _, tt := range []struct {
		sizes []int
		want  int
	}{
		{[]int{10}, 1},
		{[]int{10, 10, 10}, 3},
		{[]int{10, 10, 5, 10}, 3}, // a shorter packet ends the run
		{[]int{10, 20, 10}, 1},    // a longer one cannot join
		{[]int{0, 0}, 1},          // empty packets go alone
		{[]int{10, 10, 0, 10}, 2}, // so does an empty one after a run
	} {
		if got := gsoRun(sized(tt.sizes...)); got != tt.want {
			t.Errorf("gsoRun(%v) = %d, want %d", tt.sizes, got, tt.want)
		}
	}
}

// BenchmarkSend6 sends batches of 64 WireGuard-sized packets to [::1]
// through the IPv6 sender, as UDP GSO runs and one datagram each.
func BenchmarkSend6(b *testing.B) {
	if c, err := net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6loopback}); err != nil {
		b.Skipf("no IPv6 loopback: %v", err)
	} else {
		c.Close()
	}
	bd := New(Options{})
	if _, _, err := bd.Open(0); err != nil {
		b.Fatal(err)
	}
	defer func() { bd.Close(); bd.Stop() }()
	s6 := bd.v6.Load()
	if s6 == nil {
		b.Fatal("no IPv6 sender")
	}
	gso := s6.gso.Load()
	r6, err := net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6loopback})
	must(b, err)
	defer r6.Close()
	sockbuf.Set(r6, 8<<20)
	go func() { // drain, as a peer would
		buf := make([]byte, 2048)
		for {
			if _, _, err := r6.ReadFromUDPAddrPort(buf); err != nil {
				return
			}
		}
	}()
	dst := r6.LocalAddr().(*net.UDPAddr).AddrPort()
	batch := make([][]byte, 64)
	for i := range batch {
		batch[i] = make([]byte, 1420)
	}
	for _, mode := range []struct {
		name string
		gso  bool
	}{{"gso", true}, {"each", false}} {
		b.Run(mode.name, func(b *testing.B) {
			if mode.gso && !gso {
				b.Skip("the kernel has no UDP GSO")
			}
			s6.gso.Store(mode.gso)
			defer s6.gso.Store(gso)
			b.SetBytes(int64(len(batch) * 1420))
			for b.Loop() {
				if err := s6.send(batch, dst); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
