package bind

import (
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/conn"
)

// TestGuardDropsPacketsFromTheMesh (loopback addresses stand for the mesh
// ones, so a regression sends nothing off the machine): packets (STUN and WireGuard) from a
// guarded source never reach STUNConn or WireGuard, and nothing is sent to
// a guarded address; other sources pass, and an empty guard passes all.
func TestGuardDropsPacketsFromTheMesh(t *testing.T) {
	b := New(Options{})
	defer b.Stop()
	sc := b.STUNConn()
	b.SetGuard([]netip.Prefix{netip.MustParsePrefix("127.0.64.0/24"), netip.MustParsePrefix("127.0.1.0/24")})
	wgs := wireguardMessages()
	req := stunRequest(t)
	inside := netip.MustParseAddrPort("127.0.64.2:51820")
	routed := netip.MustParseAddrPort("[::ffff:127.0.1.2]:51820")
	outside := netip.MustParseAddrPort("127.0.0.10:51820")
	type pkt struct {
		p    []byte
		from netip.AddrPort
		keep bool
	}
	batch := []pkt{{req, inside, false}, {wgs[0], inside, false}, {wgs[1], routed, false}, {req, outside, true}, {wgs[2], outside, true}}
	fake := func(bufs [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
		for i, p := range batch {
			sizes[i] = copy(bufs[i], p.p)
			eps[i] = &conn.StdNetEndpoint{AddrPort: p.from}
		}
		return len(batch), nil
	}
	bufs := make([][]byte, 8)
	for i := range bufs {
		bufs[i] = make([]byte, 2048)
	}
	sizes := make([]int, 8)
	eps := make([]conn.Endpoint, 8)
	if _, err := b.demux(fake)(bufs, sizes, eps); err != nil {
		t.Fatal(err)
	}
	for i, p := range batch {
		if got := sizes[i] != 0; got != p.keep && !(p.keep && IsSTUN(p.p)) {
			t.Errorf("packet %d from %v: kept=%v, want %v", i, p.from, got, p.keep)
		}
	}
	if g := b.Guarded(); g != 3 {
		t.Errorf("guarded = %d, want 3", g)
	}
	buf := make([]byte, 1500)
	sc.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, addr, err := sc.ReadFrom(buf)
	if err != nil || addr.(*net.UDPAddr).AddrPort() != outside {
		t.Fatalf("STUNConn read: %v %v, want the request from %v only", addr, err, outside)
	}
	sc.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if _, addr, err := sc.ReadFrom(buf); err == nil {
		t.Fatalf("STUN from %v reached STUNConn", addr)
	}

	// Sends: the bind is not open, so only a guarded destination is
	// refused before the socket is reached.
	if _, _, err := b.Open(0); err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if _, err := sc.WriteTo(req, net.UDPAddrFromAddrPort(inside)); !errors.Is(err, ErrGuarded) {
		t.Fatalf("STUN write to %v: %v, want ErrGuarded", inside, err)
	}
	before := b.Guarded()
	if err := b.Send([][]byte{wgs[0]}, &conn.StdNetEndpoint{AddrPort: routed}); err != nil {
		t.Fatalf("send to a guarded address: %v (dropped silently)", err)
	}
	if b.Guarded() != before+1 {
		t.Fatalf("send to %v not dropped", routed)
	}
	if _, tx := b.Traffic(); tx != 0 {
		t.Fatalf("a dropped send counted as traffic: %d", tx)
	}
	b.SetGuard(nil)
	fake2 := func(bufs [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
		sizes[0] = copy(bufs[0], wgs[0])
		eps[0] = &conn.StdNetEndpoint{AddrPort: inside}
		return 1, nil
	}
	if _, err := b.demux(fake2)(bufs, sizes, eps); err != nil || sizes[0] == 0 {
		t.Fatalf("with the guard off a packet from %v was dropped", inside)
	}
}
