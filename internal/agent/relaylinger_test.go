package agent

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

	"meshd/internal/agent/path"
	"meshd/internal/keys"
	"meshd/internal/testutil"
	"meshd/wg"
)

// stunBlockedDevice is a real device whose STUN conn drops what ICE sends
// while its blocker is on: no direct path can be found, WireGuard itself
// is untouched.
type stunBlockedDevice struct {
	wg.Device
	b *blocker
}

func (d *stunBlockedDevice) STUNConn() net.PacketConn {
	return &blockConn{PacketConn: d.Device.STUNConn(), b: d.b}
}

// lingerPath is a path config with a short relay linger for tests.
func lingerPath(linger time.Duration) path.Config {
	return path.Config{RelayLinger: linger, BackoffMin: 100 * time.Millisecond, BackoffMax: 500 * time.Millisecond}
}

// peerPath returns e's status state and path towards the peer with overlay
// address ip.
func peerPath(e *Engine, ip netip.Addr) (state, p string) {
	for _, s := range e.Status().Peers {
		if s.OverlayIp == ip.String() {
			return s.State, s.Path
		}
	}
	return "", ""
}

func lastHandshake(tb testing.TB, d wg.Device, peer keys.Key) time.Time {
	tb.Helper()
	st, err := d.Stats()
	if err != nil {
		tb.Fatal(err)
	}
	for _, s := range st {
		if s.PublicKey == peer {
			return s.LastHandshake
		}
	}
	tb.Fatalf("peer %s not on the device", peer)
	return time.Time{}
}

// The bug of bench/NOTES.md with real WireGuard: the relay carried the
// first packets and WireGuard's handshake, then the direct path came up.
// WireGuard carries its session over to the direct path and makes no new
// handshake before its rekey (two minutes), and the relay sessions (a TURN
// allocation on each side) stayed open until then, next to a working
// direct path. They must close once the direct path has worked for the
// relay linger.
func TestRelayClosedAfterUpgradeWithoutNewHandshake(t *testing.T) {
	const linger = 2 * time.Second
	w := newWorld(t)
	blk := &blocker{}
	blk.on.Store(true)
	a := w.agentWith("lingera", func(o *Options) {
		o.Path = lingerPath(linger)
		o.NewDevice = func(ctx context.Context, cfg wg.Config) (wg.Device, error) {
			d, err := wg.New(ctx, cfg)
			if err != nil {
				return nil, err
			}
			return &stunBlockedDevice{Device: d, b: blk}, nil
		}
	})
	b := w.agentWith("lingerb", func(o *Options) { o.Path = lingerPath(linger) })
	da, ipa := waitUp(t, a)
	db, ipb := waitUp(t, b)

	// Relayed, with WireGuard's handshake made over the relay.
	waitPing(t, da, ipb, 15*time.Second)
	testutil.WaitFor(t, 10*time.Second, "connected over the relay on both sides", func() bool {
		sa, pa := peerPath(a, ipb)
		sb, pb := peerPath(b, ipa)
		return sa == PeerConnected && pa == PathRelayed && sb == PeerConnected && pb == PathRelayed
	})
	hs := lastHandshake(t, da, b.PublicKey())
	if hs.IsZero() {
		t.Fatal("no handshake over the relay")
	}
	if n := w.relay.Stats().Allocations; n == 0 {
		t.Fatal("no relay allocation while relayed")
	}

	// A direct path opens up.
	blk.on.Store(false)
	testutil.WaitFor(t, 15*time.Second, "direct on both sides", func() bool {
		_, pa := peerPath(a, ipb)
		_, pb := peerPath(b, ipa)
		return pa == PathDirect && pb == PathDirect
	})
	switched := time.Now()
	// Both relay sessions close (their allocations are released) within
	// the linger, plus a stats poll and the close's round trips.
	testutil.WaitFor(t, linger+5*time.Second, "relay allocations released", func() bool {
		return w.relay.Stats().Allocations == 0
	})
	t.Logf("relay sessions closed %v after the switch to direct", time.Since(switched).Round(time.Millisecond))
	if got := lastHandshake(t, da, b.PublicKey()); !got.Equal(hs) {
		t.Fatalf("WireGuard made a handshake after the switch (%v, before %v): the test needs it not to", got, hs)
	}
	// The direct path carries the tunnel, and nothing went back to the relay.
	waitPing(t, da, ipb, 5*time.Second)
	waitPing(t, db, ipa, 5*time.Second)
	for name, st := range map[string]func() (string, string){
		"a": func() (string, string) { return peerPath(a, ipb) },
		"b": func() (string, string) { return peerPath(b, ipa) },
	} {
		if s, p := st(); s != PeerConnected || p != PathDirect {
			t.Errorf("%s: %s %s after the relay closed, want connected direct", name, s, p)
		}
	}
	if n := w.relay.Stats().Allocations; n != 0 {
		t.Errorf("%d relay allocations after the pings", n)
	}
}
