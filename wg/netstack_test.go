package wg

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap/zaptest"

	"meshd/internal/keys"
)

func TestMain(m *testing.M) {
	if helperMain() {
		return
	}
	goleak.VerifyTestMain(m)
}

// node is one netstack device in a test.
type node struct {
	dev  Device
	priv keys.Private
	pub  keys.Key
	addr netip.Addr
}

func newNode(tb testing.TB, i int) *node {
	tb.Helper()
	return newNodeWith(tb, i, nil)
}

// newNodeWith makes node i with its config changed by edit (may be nil).
func newNodeWith(tb testing.TB, i int, edit func(*Config)) *node {
	tb.Helper()
	priv, err := keys.Generate()
	if err != nil {
		tb.Fatal(err)
	}
	addr := netip.AddrFrom4([4]byte{100, 64, 0, byte(i)})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cfg := Config{
		Mode:       ModeNetstack,
		Name:       fmt.Sprintf("ns%d", i),
		PrivateKey: priv,
		Address:    netip.PrefixFrom(addr, 16),
		Log:        zaptest.NewLogger(tb),
	}
	if edit != nil {
		edit(&cfg)
	}
	dev, err := New(ctx, cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { dev.Close() })
	return &node{dev: dev, priv: priv, pub: priv.Public(), addr: addr}
}

func (n *node) loopback() netip.AddrPort {
	return netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), n.dev.ListenPort())
}

func (n *node) peer(other *node) Peer {
	return Peer{PublicKey: other.pub, AllowedIPs: []netip.Prefix{netip.PrefixFrom(other.addr, 32)}}
}

// link makes a and b peers of each other on a direct path over loopback.
func link(tb testing.TB, a, b *node) {
	tb.Helper()
	must(tb, a.dev.SetPeer(a.peer(b)))
	must(tb, b.dev.SetPeer(b.peer(a)))
	must(tb, a.dev.SetDirect(b.pub, b.loopback()))
	must(tb, b.dev.SetDirect(a.pub, a.loopback()))
}

func must(tb testing.TB, err error) {
	tb.Helper()
	if err != nil {
		tb.Fatal(err)
	}
}

// echoServer accepts TCP connections on the node's overlay address and
// echoes them until the test ends.
func echoServer(tb testing.TB, n *node, port uint16) {
	tb.Helper()
	ln, err := n.dev.Net().ListenTCPAddrPort(netip.AddrPortFrom(n.addr, port))
	if err != nil {
		tb.Fatal(err)
	}
	done := make(chan struct{})
	tb.Cleanup(func() { ln.Close(); <-done })
	go func() {
		defer close(done)
		var conns []net.Conn
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c)
			go io.Copy(c, c)
		}
	}()
}

// dial opens a TCP connection from a to b's echo server through the tunnel.
func dial(tb testing.TB, a, b *node, port uint16) net.Conn {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := a.dev.Net().DialContextTCPAddrPort(ctx, netip.AddrPortFrom(b.addr, port))
	if err != nil {
		tb.Fatalf("dial %s through the tunnel: %v", b.addr, err)
	}
	tb.Cleanup(func() { c.Close() })
	return c
}

// roundTrip writes size random bytes to c and checks they come back.
func roundTrip(tb testing.TB, c net.Conn, size int) {
	tb.Helper()
	out := make([]byte, size)
	rand.Read(out)
	c.SetDeadline(time.Now().Add(20 * time.Second))
	defer c.SetDeadline(time.Time{})
	errc := make(chan error, 1)
	go func() { _, err := c.Write(out); errc <- err }()
	in := make([]byte, size)
	if _, err := io.ReadFull(c, in); err != nil {
		tb.Fatalf("read echo: %v", err)
	}
	if err := <-errc; err != nil {
		tb.Fatalf("write: %v", err)
	}
	if !bytes.Equal(in, out) {
		tb.Fatalf("echo differs: sha %x vs %x", sha256.Sum256(in), sha256.Sum256(out))
	}
}

func TestNetstackDirectTCP(t *testing.T) {
	a, b := newNode(t, 1), newNode(t, 2)
	link(t, a, b)
	echoServer(t, b, 7)
	c := dial(t, a, b, 7)
	roundTrip(t, c, 1<<20)

	stats, err := a.dev.Stats()
	must(t, err)
	if len(stats) != 1 || stats[0].PublicKey != b.pub {
		t.Fatalf("stats: %+v", stats)
	}
	s := stats[0]
	if s.Endpoint != b.loopback().String() || s.Relayed || s.TxBytes < 1<<20 || s.RxBytes < 1<<20 || s.LastHandshake.IsZero() {
		t.Fatalf("stats after 1 MiB each way: %+v", s)
	}
	// The device's own counters saw at least what wireguard-go reports
	// for its one peer (both count whole WireGuard messages).
	if c := a.dev.Counters(); c.TxBytes < uint64(s.TxBytes) || c.RxBytes < uint64(s.RxBytes) {
		t.Fatalf("counters rx=%d tx=%d below the peer's rx=%d tx=%d", c.RxBytes, c.TxBytes, s.RxBytes, s.TxBytes)
	}
}

func TestUnknownPeer(t *testing.T) {
	a := newNode(t, 1)
	var k keys.Key
	k[0] = 1
	if err := a.dev.SetDirect(k, netip.MustParseAddrPort("127.0.0.1:9")); !errors.Is(err, ErrUnknownPeer) {
		t.Fatalf("SetDirect unknown: %v", err)
	}
	if err := a.dev.RemovePeer(k); !errors.Is(err, ErrUnknownPeer) {
		t.Fatalf("RemovePeer unknown: %v", err)
	}
	must(t, a.dev.Close())
	if err := a.dev.SetPeer(Peer{PublicKey: k}); !errors.Is(err, ErrClosed) {
		t.Fatalf("after close: %v", err)
	}
}
