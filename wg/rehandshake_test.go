package wg

import (
	"bytes"
	"net/netip"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"meshd/internal/keys"
)

// TestRehandshakeAfterRemoteRestart: the controlled side restarts (a new
// device with the same key) while the controlling side keeps the old
// session. After Rehandshake on the new path, the controlling side starts
// the handshake itself (the restarted side receives its initiation)
// instead of the restarted side waiting out its grace and initiating.
func TestRehandshakeAfterRemoteRestart(t *testing.T) {
	kA, _ := keys.Generate()
	kB, _ := keys.Generate()
	if pa, pb := kA.Public(), kB.Public(); bytes.Compare(pa[:], pb[:]) < 0 {
		kA, kB = kB, kA // kA controls
	}
	withKey := func(i int, k keys.Private, log *zap.Logger) *node {
		n := newNodeWith(t, i, func(c *Config) {
			c.PrivateKey = k
			if log != nil {
				c.Log = log
			}
		})
		n.priv, n.pub = k, k.Public()
		return n
	}
	ctlCore, ctlLogs := observer.New(zap.DebugLevel)
	ctl := withKey(1, kA, zap.New(ctlCore))
	led := withKey(2, kB, nil)
	lo := func(n *node) netip.AddrPort { return n.loopback() }
	must(t, ctl.dev.SetPeer(ctl.peer(led)))
	must(t, led.dev.SetPeer(led.peer(ctl)))
	must(t, ctl.dev.SetDirect(led.pub, lo(led)))
	must(t, led.dev.SetDirect(ctl.pub, lo(ctl)))
	if err := <-startPing(t, led, ctl, time.Now().Add(4*time.Second)); err != nil {
		t.Fatalf("first join: %v", err)
	}

	// The controlled side restarts: same key, new device, new port.
	must(t, led.dev.Close())
	restarted := time.Now()
	ledCore, ledLogs := observer.New(zap.DebugLevel)
	led2 := withKey(2, kB, zap.New(ledCore))
	must(t, led2.dev.SetPeer(led2.peer(ctl)))
	ctlLogs.TakeAll()

	must(t, ctl.dev.SetDirect(led2.pub, lo(led2)))
	must(t, ctl.dev.(Rehandshaker).Rehandshake(led2.pub, restarted))
	must(t, led2.dev.SetDirect(ctl.pub, lo(ctl)))
	if err := <-startPing(t, led2, ctl, time.Now().Add(4*time.Second)); err != nil {
		t.Fatalf("after the restart: %v", err)
	}
	if ledLogs.FilterMessageSnippet("Received handshake initiation").Len() == 0 {
		t.Errorf("the controlling side did not initiate after the restart; the restarted side did %d times",
			ctlLogs.FilterMessageSnippet("Received handshake initiation").Len())
	}
	// Once a handshake completed after the restart, Rehandshake does
	// nothing more.
	ledLogs.TakeAll()
	must(t, ctl.dev.(Rehandshaker).Rehandshake(led2.pub, restarted))
	if err := <-startPing(t, led2, ctl, time.Now().Add(2*time.Second)); err != nil {
		t.Fatal(err)
	}
	if n := ledLogs.FilterMessageSnippet("Received handshake initiation").Len(); n != 0 {
		t.Errorf("Rehandshake after a completed handshake started %d more", n)
	}
}
