package agent

import (
	"bytes"
	"context"
	"crypto/rand"
	"io"
	"net"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"connectrpc.com/connect"
	"go.uber.org/zap/zaptest"

	adminv1 "meshd/api/admin/v1"
	"meshd/internal/control"
	"meshd/internal/control/controltest"
	"meshd/internal/signal/signaltest"
	"meshd/internal/testutil"
	"meshd/internal/tlsconf"
	"meshd/nat/relay"
	"meshd/wg"
)

// world is control, signal and a relay on loopback, all real.
type world struct {
	tb       testing.TB
	control  *controltest.Harness
	signal   *signaltest.Harness
	relay    *relay.Server
	pin      string
	setupKey string
}

func newWorld(tb testing.TB) *world {
	tb.Helper()
	secret := []byte("test turn secret, 32 bytes long!")
	rs, err := relay.New(relay.Options{
		Log: zaptest.NewLogger(tb).Named("relay"), Secret: secret,
		PublicIP: netip.MustParseAddr("127.0.0.1"), ListenAddr: "127.0.0.1:0", Workers: 1,
	})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { rs.Close() })
	sig := signaltest.Start(tb, signaltest.Options{})
	urls := relay.URLs("127.0.0.1", int(rs.UDPAddr().Port()), 0)
	h := controltest.NewHarness(tb, 0, controltest.WithOptions(func(o *control.Options) {
		o.SignalURL, o.SignalPin = sig.URL, sig.Pin
		o.Relays = control.RelayOptions{URLs: urls, Secret: secret}
	}))
	return &world{tb: tb, control: h, signal: sig, relay: rs,
		pin: tlsconf.Pin(h.Server.Certificate().Raw), setupKey: h.Boot.SetupKey}
}

// agent starts a real engine in netstack mode.
func (w *world) agent(name string) *Engine { return w.agentWith(name, nil) }

// agentWith starts a real engine in netstack mode with options changed by
// opt (nil: none).
func (w *world) agentWith(name string, opt func(*Options)) *Engine {
	tb := w.tb
	tb.Helper()
	o := Options{
		StateDir: filepath.Join(tb.TempDir(), name), ControlURL: w.control.URL, Pin: w.pin,
		SetupKey: w.setupKey, Hostname: name,
		Device:          wg.Config{Mode: wg.ModeNetstack, Name: name},
		Clients:         RealClients(),
		IncludeLoopback: true,
		Log:             zaptest.NewLogger(tb).Named(name),
	}
	if opt != nil {
		opt(&o)
	}
	e, err := New(o)
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); e.Run(ctx) }()
	tb.Cleanup(func() { cancel(); <-done })
	return e
}

// waitUp waits until e has its device and overlay address.
func waitUp(tb testing.TB, e *Engine) (wg.Device, netip.Addr) {
	tb.Helper()
	testutil.WaitFor(tb, 15*time.Second, "agent up", func() bool {
		st := e.Status()
		return st.State == "up" && e.Device() != nil && st.Self.OverlayIp != ""
	})
	return e.Device(), netip.MustParseAddr(e.Status().Self.OverlayIp)
}

// ping sends one echo request from d to dst and waits up to timeout.
func ping(d wg.Device, dst netip.Addr, timeout time.Duration) error {
	c, err := d.Net().DialPingAddr(netip.Addr{}, dst)
	if err != nil {
		return err
	}
	defer c.Close()
	req := []byte{8, 0, 0, 0, 0, 1, 0, 1, 'm', 'e', 's', 'h', 'd'}
	if _, err := c.Write(req); err != nil {
		return err
	}
	c.SetReadDeadline(time.Now().Add(timeout))
	buf := make([]byte, 1500)
	_, err = c.Read(buf)
	return err
}

// waitPing pings every 10 ms until an answer comes or d passes.
func waitPing(tb testing.TB, dev wg.Device, dst netip.Addr, d time.Duration) time.Time {
	tb.Helper()
	deadline := time.Now().Add(d)
	for {
		if err := ping(dev, dst, 10*time.Millisecond); err == nil {
			return time.Now()
		} else if time.Now().After(deadline) {
			tb.Fatalf("no ping answer from %s in %v: %v", dst, d, err)
		}
	}
}

func TestMeshMovesTCPThroughTheTunnel(t *testing.T) {
	w := newWorld(t)
	a, b, c := w.agent("mesha"), w.agent("meshb"), w.agent("meshc")
	da, _ := waitUp(t, a)
	db, ipb := waitUp(t, b)
	dc, ipc := waitUp(t, c)

	// An echo server on b's netstack; a sends 1 MiB through the tunnel.
	ln, err := db.Net().ListenTCP(&net.TCPAddr{Port: 7000})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer conn.Close(); io.Copy(conn, conn) }()
		}
	}()
	waitPing(t, da, ipb, 15*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	conn, err := da.Net().DialContextTCPAddrPort(ctx, netip.AddrPortFrom(ipb, 7000))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	want := make([]byte, 1<<20)
	rand.Read(want)
	go func() { conn.Write(want) }()
	got := make([]byte, len(want))
	conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.ReadFull(conn, got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("echoed data differs")
	}
	// c reaches both.
	waitPing(t, dc, ipb, 15*time.Second)
	waitPing(t, dc, netip.MustParseAddr(a.Status().Self.OverlayIp), 15*time.Second)
	_ = ipc

	// Status: b is connected to a over a direct path (loopback host pair).
	testutil.WaitFor(t, 5*time.Second, "a sees b connected", func() bool {
		for _, p := range a.Status().Peers {
			if p.OverlayIp == ipb.String() {
				return p.State == PeerConnected && p.Path == PathDirect && p.RxBytes > 0 && p.TxBytes > 0
			}
		}
		return false
	})
}

func TestMeshDeletedPeerLosesTunnelAndControlOutage(t *testing.T) {
	w := newWorld(t)
	a, b := w.agent("mesha"), w.agent("meshb")
	da, _ := waitUp(t, a)
	db, ipb := waitUp(t, b)
	waitPing(t, da, ipb, 15*time.Second)
	ipa := netip.MustParseAddr(a.Status().Self.OverlayIp)

	// Control goes away: the tunnel keeps working, status says so.
	w.control.Restart() // flaps control once; the agents reconnect
	waitPing(t, da, ipb, 5*time.Second)
	waitPing(t, db, ipa, 5*time.Second)

	// An admin deletes b: a drops b within seconds, and pings stop.
	ctx := context.Background()
	resp, err := w.control.Admin.ListPeers(ctx, connect.NewRequest(&adminv1.ListPeersRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	var bid string
	for _, p := range resp.Msg.Peers {
		if p.OverlayIp == ipb.String() {
			bid = p.Id
		}
	}
	if bid == "" {
		t.Fatalf("b not among the peers %v", resp.Msg.Peers)
	}
	if _, err := w.control.Admin.DeletePeer(ctx, connect.NewRequest(&adminv1.DeletePeerRequest{Id: bid})); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	testutil.WaitFor(t, 5*time.Second, "b gone from a", func() bool { return len(a.Status().Peers) == 0 })
	if err := ping(da, ipb, 500*time.Millisecond); err == nil {
		t.Fatal("a still reaches b after b was deleted")
	}
	t.Logf("deleted peer lost its tunnel in %v", time.Since(start).Round(time.Millisecond))
	testutil.WaitFor(t, 5*time.Second, "b told to log in again", func() bool { return b.Status().State == "needs-login" })
}
