package wg

import (
	"bytes"
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
	"golang.zx2c4.com/wireguard/device"

	"meshd/internal/testutil"
)

// startPing sends one echo request from a to b and returns a channel that
// gets the outcome of waiting for the reply until deadline.
func startPing(tb testing.TB, a, b *node, deadline time.Time) <-chan error {
	tb.Helper()
	c, err := a.dev.Net().DialPingAddr(a.addr, b.addr)
	must(tb, err)
	tb.Cleanup(func() { c.Close() })
	_, err = c.Write([]byte{8, 0, 0, 0, 0, 7, 0, 1, 'f', 'i', 'r', 's', 't'})
	must(tb, err)
	res := make(chan error, 1)
	go func() {
		c.SetReadDeadline(deadline)
		_, err := c.Read(make([]byte, 1500))
		res <- err
	}()
	return res
}

// heldBack waits until wireguard-go of n failed to send an initiation to
// peer for want of an endpoint: from then on it holds the next one back.
func heldBack(tb testing.TB, n *node, peer *node) {
	tb.Helper()
	gd := n.dev.(*goDevice)
	p := gd.dev.LookupPeer(device.NoisePublicKey(peer.pub))
	testutil.WaitFor(tb, 5*time.Second, "no failed handshake initiation seen", func() bool {
		gd.failed.mu.Lock()
		defer gd.failed.mu.Unlock()
		_, ok := gd.failed.at[p]
		return ok
	})
}

// TestFirstPathHandshakeAtOnce: traffic sent to a peer before it has a
// path makes wireguard-go try a handshake, fail (no endpoint) and hold the
// next attempt back for RekeyTimeout (5 s). Once both sides have a path the
// handshake must go out at once and the queued packet arrive, whichever
// side sent it (the controlling or the controlled one) and whichever side
// gets its path first — well before the 5 s hold-back would end.
func TestFirstPathHandshakeAtOnce(t *testing.T) {
	for _, tc := range []struct {
		name                string
		senderControls      bool
		senderPathFirst     bool
		bothSendBeforePaths bool
	}{
		{"controlling sender, its path first", true, true, false},
		{"controlling sender, its path last", true, false, false},
		{"controlled sender, its path first", false, true, false},
		{"controlled sender, its path last", false, false, false},
		{"both send before their paths", true, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b := newNode(t, 1), newNode(t, 2)
			if a.dev.(*goDevice).controls(b.pub) != tc.senderControls {
				a, b = b, a
			}
			must(t, a.dev.SetPeer(a.peer(b)))
			must(t, b.dev.SetPeer(b.peer(a)))

			start := time.Now()
			// The hold-back ends RekeyTimeout after the failed attempt
			// (plus up to 333 ms of jitter): the answer must come before.
			deadline := start.Add(device.RekeyTimeout - time.Second)
			replyA := startPing(t, a, b, deadline)
			heldBack(t, a, b)
			var replyB <-chan error
			if tc.bothSendBeforePaths {
				replyB = startPing(t, b, a, deadline)
				heldBack(t, b, a)
			}
			first, second := a, b
			if !tc.senderPathFirst {
				first, second = b, a
			}
			must(t, first.dev.SetDirect(second.pub, second.loopback()))
			must(t, second.dev.SetDirect(first.pub, first.loopback()))
			if err := <-replyA; err != nil {
				t.Fatalf("no answer to the packet queued before the paths within %v: %v", deadline.Sub(start), err)
			}
			if replyB != nil {
				if err := <-replyB; err != nil {
					t.Fatalf("no answer to b's queued packet within %v: %v", deadline.Sub(start), err)
				}
			}
			t.Logf("first answer after %v", time.Since(start).Round(time.Millisecond))
		})
	}
}

// TestFirstPathKeepalive: the keepalive reaches wireguard-go only once the
// peer has a path (before, it would only make initiations that cannot go
// out), on both sides.
func TestFirstPathKeepalive(t *testing.T) {
	a, b := newNode(t, 1), newNode(t, 2)
	pa, pb := a.peer(b), b.peer(a)
	pa.PersistentKeepalive, pb.PersistentKeepalive = 25*time.Second, 25*time.Second
	must(t, a.dev.SetPeer(pa))
	must(t, b.dev.SetPeer(pb))
	for _, n := range []*node{a, b} {
		if got := uapiKeepalive(t, n); got != "0" {
			t.Fatalf("keepalive %s before any path", got)
		}
	}
	must(t, a.dev.SetDirect(b.pub, b.loopback()))
	must(t, b.dev.SetDirect(a.pub, a.loopback()))
	testutil.WaitFor(t, 5*time.Second, "keepalive on after the first path", func() bool {
		return uapiKeepalive(t, a) == "25" && uapiKeepalive(t, b) == "25"
	})
	if peerStats(t, a, b.pub).LastHandshake.IsZero() {
		t.Fatal("no handshake although both sides have their path and keepalive")
	}
	// A later SetPeer changes it at once.
	pa.PersistentKeepalive = 30 * time.Second
	must(t, a.dev.SetPeer(pa))
	if got := uapiKeepalive(t, a); got != "30" {
		t.Fatalf("keepalive %s after SetPeer on a peer with a path", got)
	}
}

func uapiKeepalive(tb testing.TB, n *node) string {
	tb.Helper()
	s, err := n.dev.(*goDevice).dev.IpcGet()
	must(tb, err)
	for _, l := range bytes.Split([]byte(s), []byte("\n")) {
		if v, ok := bytes.CutPrefix(l, []byte("persistent_keepalive_interval=")); ok {
			return string(v)
		}
	}
	return ""
}

// TestNoEndpointIsNotAnError: traffic to a peer without a path is normal
// and must not log at error level.
func TestNoEndpointIsNotAnError(t *testing.T) {
	failed := new(initiationFailures)
	core, logs := observer.New(zap.DebugLevel)
	l := goLogger(zap.New(core), failed)
	p := new(device.Peer)
	l.Errorf(initiationFailedFormat, p, errors.New(noEndpoint))
	errs := logs.FilterLevelExact(zap.ErrorLevel).Len()
	if debugs := logs.FilterLevelExact(zap.DebugLevel).Len(); errs != 0 || debugs != 1 {
		t.Fatalf("no-endpoint failure logged %d times at error, %d at debug", errs, debugs)
	}
	if !failed.take(p) || failed.take(p) {
		t.Fatal("failure not noted once")
	}
	l.Errorf(initiationFailedFormat, p, net.ErrClosed)
	l.Errorf("%v - Failed to send handshake response: %v", p, net.ErrClosed)
	if errs := logs.FilterLevelExact(zap.ErrorLevel).Len(); errs != 2 {
		t.Fatalf("other send failures logged %d times at error, want 2", errs)
	}
}

// TestFirstPathNoCrossingOverIPv6 is how the agent lost 5 s on IPv6 host
// pairs: the controlled side got its path first and sent at once, its
// packet started an initiation, the controlling side's initiation crossed
// it, each side answered the other's and dropped the answer to its own,
// and nothing worked until wireguard-go's retransmission 5 s later. Here
// over ::1 (the dual-stack socket), several rounds: the controlled side
// must leave the first handshake to the controlling one.
func TestFirstPathNoCrossingOverIPv6(t *testing.T) {
	if c, err := net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6loopback}); err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	} else {
		c.Close()
	}
	for round := 0; round < 6; round++ {
		coreA, logsA := observer.New(zap.DebugLevel)
		coreB, logsB := observer.New(zap.DebugLevel)
		ctl := newNodeWith(t, 1, func(c *Config) { c.Log = zap.New(coreA) })
		led := newNodeWith(t, 2, func(c *Config) { c.Log = zap.New(coreB) })
		logs := logsA // the controlling side's
		if !ctl.dev.(*goDevice).controls(led.pub) {
			ctl, led, logs = led, ctl, logsB
		}
		must(t, ctl.dev.SetPeer(ctl.peer(led)))
		must(t, led.dev.SetPeer(led.peer(ctl)))
		v6 := func(n *node) netip.AddrPort { return netip.AddrPortFrom(netip.IPv6Loopback(), n.dev.ListenPort()) }
		start := time.Now()
		must(t, led.dev.SetDirect(ctl.pub, v6(ctl)))
		reply := startPing(t, led, ctl, start.Add(device.RekeyTimeout-time.Second))
		must(t, ctl.dev.SetDirect(led.pub, v6(led)))
		if err := <-reply; err != nil {
			t.Fatalf("round %d: no answer within 4 s: %v", round, err)
		}
		took := time.Since(start)
		got := logs.FilterMessageSnippet("Received handshake initiation").Len()
		if took < controlledGrace && got != 0 {
			t.Fatalf("round %d: the controlled side initiated too (%d initiations received by the controlling one)", round, got)
		}
		if ep := peerStats(t, ctl, led.pub).Endpoint; ep != v6(led).String() {
			t.Fatalf("round %d: endpoint %s, want %s", round, ep, v6(led))
		}
		t.Logf("round %d: answer after %v", round, took.Round(time.Millisecond))
	}
}
