package agent

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"meshd/internal/filter"
	"meshd/internal/testutil"
	"meshd/wg"
)

// fwDevice is a device that enforces the rules itself, as kernel mode
// does: it records what the engine gives SetFirewall.
type fwDevice struct {
	wg.Device
	mu    sync.Mutex
	rules []*filter.Rules
}

var _ wg.FirewallDevice = (*fwDevice)(nil)

func (d *fwDevice) SetFirewall(r *filter.Rules) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.rules = append(d.rules, r)
	return nil
}

func (d *fwDevice) last() *filter.Rules {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.rules) == 0 {
		return nil
	}
	return d.rules[len(d.rules)-1]
}

// TestEngineGivesFirewallDeviceTheMapRules: a device that enforces the
// firewall itself (kernel mode's nftables table) gets every map's compiled
// rules, the very ones the engine's packet filter applies.
func TestEngineGivesFirewallDeviceTheMapRules(t *testing.T) {
	w := newWorld(t)
	devs := make(chan *fwDevice, 1)
	var flt atomic.Pointer[filter.Filter]
	a := w.agentWith("kfwa", func(o *Options) {
		o.NewDevice = func(ctx context.Context, cfg wg.Config) (wg.Device, error) {
			d, err := wg.New(ctx, cfg)
			if err != nil {
				return nil, err
			}
			fd := &fwDevice{Device: d}
			select {
			case devs <- fd:
			default:
			}
			return fd, nil
		}
		o.OnDevice = func(_ wg.Device, f *filter.Filter) { flt.Store(f) }
	})
	b := w.agent("kfwb")
	_, ipb := waitUp(t, b)
	waitUp(t, a)
	var fd *fwDevice
	select {
	case fd = <-devs:
	case <-time.After(10 * time.Second):
		t.Fatal("no device made")
	}
	testutil.WaitFor(t, 10*time.Second, "a's firewall device gets rules for b", func() bool {
		for _, s := range fd.last().Specs() {
			if s.Peer.Contains(ipb) {
				return true
			}
		}
		return false
	})
	if got, want := fd.last(), flt.Load().Rules(); got != want {
		t.Errorf("the device enforces other rules than the packet filter: %+v vs %+v", got.Specs(), want.Specs())
	}
}
