package agent

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"meshd/internal/control"
	"meshd/internal/control/controltest"
	"meshd/internal/signal/signaltest"
	"meshd/internal/testutil"
	"meshd/internal/tlsconf"
	"meshd/nat/peerconn"
	"meshd/nat/relay"
	"meshd/wg"
)

// A relayed tunnel outlives the rotation of short-lived TURN credentials:
// control issues credentials of 3 s and sends fresh ones at half-life,
// each agent hands them to its running relay session, and its allocation,
// refreshed every second, keeps working long after the first credentials
// expired. Without the new credentials reaching the session the relay
// refuses the refreshes as expired and the allocations end.
func TestRelayedTunnelOutlivesTURNCredentials(t *testing.T) {
	const (
		ttl = 3 * time.Second
		run = 8 * time.Second
	)
	secret := []byte("test turn secret, 32 bytes long!")
	rs, err := relay.New(relay.Options{
		Log: zaptest.NewLogger(t).Named("relay"), Secret: secret,
		PublicIP: netip.MustParseAddr("127.0.0.1"), ListenAddr: "127.0.0.1:0", Workers: 1,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rs.Close() })
	sig := signaltest.Start(t, signaltest.Options{})
	urls := relay.URLs("127.0.0.1", int(rs.UDPAddr().Port()), 0)
	h := controltest.NewHarness(t, 0, controltest.WithOptions(func(o *control.Options) {
		o.SignalURL, o.SignalPin = sig.URL, sig.Pin
		o.Relays = control.RelayOptions{URLs: urls, Secret: secret, TTL: ttl}
		o.Now = time.Now // credentials expire in the relay's time
	}))
	w := &world{tb: t, control: h, signal: sig, relay: rs, pin: tlsconf.Pin(h.Server.Certificate().Raw), setupKey: h.Boot.SetupKey}

	timing := peerconn.RelayTiming
	timing.TURNLifetime = 2 * time.Second
	blk := &blocker{}
	blk.on.Store(true) // no direct path: the tunnel stays relayed
	a := w.agentWith("rota", func(o *Options) {
		o.ICETiming = &timing
		o.NewDevice = func(ctx context.Context, cfg wg.Config) (wg.Device, error) {
			d, err := wg.New(ctx, cfg)
			if err != nil {
				return nil, err
			}
			return &stunBlockedDevice{Device: d, b: blk}, nil
		}
	})
	b := w.agentWith("rotb", func(o *Options) { o.ICETiming = &timing })
	da, ipa := waitUp(t, a)
	_, ipb := waitUp(t, b)
	waitPing(t, da, ipb, 15*time.Second)
	testutil.WaitFor(t, 10*time.Second, "relayed on both sides", func() bool {
		_, pa := peerPath(a, ipb)
		_, pb := peerPath(b, ipa)
		return pa == PathRelayed && pb == PathRelayed
	})
	before := rs.Stats()
	for start := time.Now(); time.Since(start) < run; {
		waitPing(t, da, ipb, 3*time.Second)
		time.Sleep(250 * time.Millisecond) // the pace of the pings, not a wait for a condition
	}
	st := rs.Stats()
	if st.AuthRefused["expired"] != 0 || st.AllocationsTotal != before.AllocationsTotal || st.Allocations != before.Allocations {
		t.Fatalf("relay stats %+v after %+v: want the same allocations throughout and no expired credential refused", st, before)
	}
	if _, pa := peerPath(a, ipb); pa != PathRelayed {
		t.Fatalf("a's path %s, want relayed", pa)
	}
}
