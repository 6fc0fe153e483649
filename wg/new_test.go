package wg

import (
	"context"
	"fmt"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"meshd/internal/filter"
)

// modeDev stands for the device a constructor made.
type modeDev struct {
	Device
	mode Mode
}

type anyFilter struct{}

func (anyFilter) Allow([]byte, bool) bool { return true }

// TestAutoPicksKernelOnlyWithItsFirewall: ModeAuto's choice on machines
// with and without the module, with filters kernel mode can and cannot
// enforce, and when the firewall table cannot be installed.
func TestAutoPicksKernelOnlyWithItsFirewall(t *testing.T) {
	noNft := fmt.Errorf("%w: nftfilter: install table: no such file or directory", ErrNoFirewall)
	for _, c := range []struct {
		name      string
		present   bool
		filter    PacketFilter
		kernelErr error
		want      Mode
		kernel    bool   // kernel constructor called
		log       string // a log line that must be there
	}{
		{"no module", false, filter.New(nil), nil, ModeUserspace, false, ""},
		{"module, rules filter", true, filter.New(nil), nil, ModeKernel, true, "using kernel WireGuard"},
		{"module, no filter", true, nil, nil, ModeKernel, true, "using kernel WireGuard"},
		{"module, opaque filter", true, anyFilter{}, nil, ModeUserspace, false, "this packet filter runs only in userspace"},
		{"module, no nftables", true, filter.New(nil), noNft, ModeUserspace, true, "could not be set up; using userspace"},
	} {
		t.Run(c.name, func(t *testing.T) {
			core, logs := observer.New(zapcore.DebugLevel)
			cfg := Config{Mode: ModeAuto, Filter: c.filter, Log: zap.New(core)}
			kernelCalled := false
			d, err := pickAuto(context.Background(), cfg,
				func(context.Context, *zap.Logger) bool { return c.present },
				func(context.Context, Config) (Device, error) {
					kernelCalled = true
					if c.kernelErr != nil {
						return nil, c.kernelErr
					}
					return modeDev{mode: ModeKernel}, nil
				},
				func(context.Context, Config) (Device, error) { return modeDev{mode: ModeUserspace}, nil })
			if err != nil {
				t.Fatal(err)
			}
			if got := d.(modeDev).mode; got != c.want {
				t.Errorf("picked %s, want %s", got, c.want)
			}
			if kernelCalled != c.kernel {
				t.Errorf("kernel constructor called: %v, want %v", kernelCalled, c.kernel)
			}
			if c.log != "" && logs.FilterMessageSnippet(c.log).Len() == 0 {
				t.Errorf("no log line %q in %v", c.log, logs.All())
			}
			if c.kernelErr != nil {
				found := false
				for _, e := range logs.All() {
					if e.ContextMap()["error"] == c.kernelErr.Error() {
						found = true
					}
				}
				if !found {
					t.Errorf("the fallback does not log why: %v", logs.All())
				}
			}
		})
	}
}
