package wgtest

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	"meshd/internal/keys"
	"meshd/wg"
)

func key(tb testing.TB) keys.Key {
	tb.Helper()
	p, err := keys.Generate()
	if err != nil {
		tb.Fatal(err)
	}
	return p.Public()
}

func TestRecordsCallsAndState(t *testing.T) {
	d := New("meshd-test", 51820)
	t.Cleanup(func() { d.Close() })
	a, b := key(t), key(t)
	if err := d.SetDirect(a, netip.MustParseAddrPort("192.0.2.1:1")); !errors.Is(err, ErrUnknownPeer) {
		t.Fatalf("set direct on unknown peer: got %v, want ErrUnknownPeer", err)
	}
	must(t, d.SetPeer(wg.Peer{PublicKey: a, AllowedIPs: []netip.Prefix{netip.MustParsePrefix("100.64.0.2/32")}}))
	must(t, d.SetPeer(wg.Peer{PublicKey: b}))
	must(t, d.SetDirect(a, netip.MustParseAddrPort("192.0.2.1:51820")))
	c1, c2 := net.Pipe()
	defer c1.Close()
	defer c2.Close()
	must(t, d.SetRelayed(b, c1))
	d.FailNext(OpRemovePeer, errors.New("boom"))
	if err := d.RemovePeer(b); err == nil {
		t.Fatal("injected failure not returned")
	}
	must(t, d.RemovePeer(b))

	want := "set-peer " + a.String() + " 100.64.0.2/32\n" +
		"set-peer " + b.String() + "\n" +
		"set-direct " + a.String() + " 192.0.2.1:51820\n" +
		"set-relayed " + b.String() + "\n" +
		"remove-peer " + b.String() + "\n"
	if got := d.Trace(); got != want {
		t.Fatalf("trace:\n%s\nwant:\n%s", got, want)
	}
	st, ok := d.Peer(a)
	if !ok || st.Path != PathDirect || st.Remote.Port() != 51820 {
		t.Fatalf("peer a state: %+v %v", st, ok)
	}
	if _, ok := d.Peer(b); ok {
		t.Fatal("removed peer still present")
	}
	stats, err := d.Stats()
	if err != nil || len(stats) != 1 || stats[0].Endpoint != "192.0.2.1:51820" {
		t.Fatalf("stats: %+v %v", stats, err)
	}
}

func TestWaitForWakesOnCall(t *testing.T) {
	d := New("meshd-test", 1)
	t.Cleanup(func() { d.Close() })
	a := key(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- d.WaitFor(ctx, func(p map[keys.Key]PeerState) bool { return p[a].Path == PathDirect })
	}()
	must(t, d.SetPeer(wg.Peer{PublicKey: a}))
	must(t, d.SetDirect(a, netip.MustParseAddrPort("127.0.0.1:9")))
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	short, cancel2 := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel2()
	if err := d.WaitFor(short, func(map[keys.Key]PeerState) bool { return false }); err == nil {
		t.Fatal("WaitFor returned nil for a condition that never holds")
	}
}

func TestClosed(t *testing.T) {
	d := New("x", 1)
	if d.STUNConn() == nil {
		t.Fatal("no default STUN conn")
	}
	must(t, d.Close())
	if err := d.SetPeer(wg.Peer{PublicKey: key(t)}); !errors.Is(err, ErrClosed) {
		t.Fatalf("after close: %v", err)
	}
}

func must(tb testing.TB, err error) {
	tb.Helper()
	if err != nil {
		tb.Fatal(err)
	}
}
