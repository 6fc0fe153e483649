package agent

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"meshd/internal/agent/path"
	"meshd/internal/keys"
	"meshd/internal/testutil"
	"meshd/wg"
)

// recDevice records how the engine sets paths and counts Stats calls (the
// engine's clock for the handshake watchdog).
type recDevice struct {
	wg.Device
	mu    sync.Mutex
	trace []string // "direct ADDR" or "relayed"
	stats int
}

func (d *recDevice) SetDirect(k keys.Key, remote netip.AddrPort) error {
	d.mu.Lock()
	d.trace = append(d.trace, "direct "+remote.String())
	d.mu.Unlock()
	return d.Device.SetDirect(k, remote)
}

func (d *recDevice) SetRelayed(k keys.Key, c net.Conn) error {
	d.mu.Lock()
	d.trace = append(d.trace, "relayed")
	d.mu.Unlock()
	return d.Device.SetRelayed(k, c)
}

func (d *recDevice) Stats() ([]wg.PeerStats, error) {
	d.mu.Lock()
	d.stats++
	d.mu.Unlock()
	return d.Device.Stats()
}

// marks returns how many path calls and Stats calls the device had.
func (d *recDevice) marks() (paths, stats int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.trace), d.stats
}

func (d *recDevice) since(paths int) []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.trace[paths:]...)
}

const watchdogTimeout = 2*statsInterval + statsInterval/2

// recording makes an engine's devices recDevices.
func recording(devs chan<- *recDevice) func(*Options) {
	return func(o *Options) {
		o.NewDevice = func(ctx context.Context, cfg wg.Config) (wg.Device, error) {
			d, err := wg.New(ctx, cfg)
			if err != nil {
				return nil, err
			}
			rd := &recDevice{Device: d}
			select {
			case devs <- rd:
			default:
			}
			return rd, nil
		}
		// A short watchdog (but longer than the stats polls that feed it):
		// the bug failed the working path one HandshakeTimeout after the
		// network change.
		o.Path = path.Config{HandshakeTimeout: watchdogTimeout}
	}
}

// TestNetworkChangeKeepsAWorkingDirectPath: a network change on one agent
// (here: the ICE mux rebuilt, as a new local address does) has both sides
// look for a new direct path; the one that works stays meanwhile, no relay
// is used, and the handshake watchdog does not fail the path afterwards,
// although WireGuard makes no new handshake for it (its session is live).
func TestNetworkChangeKeepsAWorkingDirectPath(t *testing.T) {
	w := newWorld(t)
	devs := make(chan *recDevice, 2)
	a, b := w.agentWith("mesha", recording(devs)), w.agentWith("meshb", recording(devs))
	da, ipa := waitUp(t, a)
	db, ipb := waitUp(t, b)
	waitPing(t, da, ipb, 15*time.Second)
	waitPing(t, db, ipa, 5*time.Second)
	connected := func(e *Engine, peer netip.Addr) func() bool {
		return func() bool {
			for _, p := range e.Status().Peers {
				if p.OverlayIp == peer.String() {
					return p.State == PeerConnected && p.Path == PathDirect
				}
			}
			return false
		}
	}
	testutil.WaitFor(t, 5*time.Second, "a sees b connected direct", connected(a, ipb))
	testutil.WaitFor(t, 5*time.Second, "b sees a connected direct", connected(b, ipa))
	ra, rb := da.(*recDevice), db.(*recDevice)
	// Let both path machines see the handshake (two stats polls each).
	waitPolls := func(what string, n int) {
		t.Helper()
		_, sa := ra.marks()
		_, sb := rb.marks()
		testutil.WaitFor(t, time.Duration(n+5)*statsInterval, what, func() bool {
			_, a2 := ra.marks()
			_, b2 := rb.marks()
			return a2 >= sa+n && b2 >= sb+n
		})
	}
	waitPolls("the handshake polled on both sides", 2)
	pa0, _ := ra.marks()
	pb0, _ := rb.marks()

	a.mu.Lock()
	tun := a.tun
	a.mu.Unlock()
	tun.renewMux(nil) // nothing went away

	// Both sides take the new direct session's pair ...
	testutil.WaitFor(t, 10*time.Second, "a new direct path on both sides", func() bool {
		pa, _ := ra.marks()
		pb, _ := rb.marks()
		return pa > pa0 && pb > pb0
	})
	// ... and keep it for longer than the watchdog's HandshakeTimeout
	// (stats polls come a statsInterval apart).
	waitPolls("stats polls past the watchdog's timeout", int(watchdogTimeout/statsInterval)+2)
	for name, d := range map[string]struct {
		dev  *recDevice
		from int
	}{"a": {ra, pa0}, "b": {rb, pb0}} {
		got := d.dev.since(d.from)
		for _, c := range got {
			if !strings.HasPrefix(c, "direct ") {
				t.Errorf("%s's paths after the change: %q, want direct ones only", name, got)
				break
			}
		}
	}
	if !connected(a, ipb)() || !connected(b, ipa)() {
		t.Errorf("status after the change: a %v, b %v", a.Status().Peers, b.Status().Peers)
	}
	waitPing(t, da, ipb, 2*time.Second)
}
