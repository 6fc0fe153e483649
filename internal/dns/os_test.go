package dns

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// recorder is a fake OS: it records commands as text.
type recorder struct {
	lines []string
	fail  string // a command starting with this fails
}

func (r *recorder) run(_ context.Context, name string, args ...string) ([]byte, error) {
	line := strings.Join(append([]string{name}, args...), " ")
	r.lines = append(r.lines, line)
	if r.fail != "" && strings.HasPrefix(line, r.fail) {
		return []byte("Failed to set DNS configuration: Link meshd0 not known"), errors.New("exit status 1")
	}
	return nil, nil
}

func TestOSWithResolved(t *testing.T) {
	rec := &recorder{}
	o := NewOS(OSOptions{Iface: "meshd0", Run: rec.run, Resolved: func() (bool, string) { return true, "" }})
	server := netip.MustParseAddr("100.64.0.1")
	if err := o.Set(context.Background(), server, "meshd.internal.", "laptop.meshd.internal"); err != nil {
		t.Fatal(err)
	}
	// The same settings again change nothing.
	if err := o.Set(context.Background(), server, "meshd.internal", ""); err != nil {
		t.Fatal(err)
	}
	if err := o.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	want := `resolvectl dns meshd0 100.64.0.1
resolvectl domain meshd0 ~meshd.internal
resolvectl default-route meshd0 false
resolvectl revert meshd0`
	if got := strings.Join(rec.lines, "\n"); got != want {
		t.Errorf("commands:\n%s\nwant:\n%s", got, want)
	}
	if o.Mode() != OSResolved {
		t.Errorf("mode %q", o.Mode())
	}
}

func TestOSWithoutResolved(t *testing.T) {
	rec := &recorder{}
	core, logs := observer.New(zap.InfoLevel)
	o := NewOS(OSOptions{Iface: "meshd0", Run: rec.run, Log: zap.New(core),
		Resolved: func() (bool, string) { return false, "systemd-resolved is not running" }})
	for range 2 {
		if err := o.Set(context.Background(), netip.MustParseAddr("100.64.0.1"), "meshd.internal", "laptop.meshd.internal"); err != nil {
			t.Fatal(err)
		}
	}
	o.Close(context.Background())
	if len(rec.lines) != 0 {
		t.Errorf("ran %q without systemd-resolved", rec.lines)
	}
	if o.Mode() != OSManual {
		t.Errorf("mode %q", o.Mode())
	}
	all := logs.All()
	if len(all) != 1 || !strings.Contains(all[0].Message, "dig @100.64.0.1 laptop.meshd.internal") ||
		!strings.Contains(all[0].Message, "resolv.conf left alone") {
		t.Errorf("want one line saying how to use the resolver, got %+v", all)
	}
}

func TestOSResolvedFails(t *testing.T) {
	rec := &recorder{fail: "resolvectl domain"}
	o := NewOS(OSOptions{Iface: "meshd0", Run: rec.run, Resolved: func() (bool, string) { return true, "" }})
	err := o.Set(context.Background(), netip.MustParseAddr("100.64.0.1"), "meshd.internal", "a.meshd.internal")
	if err == nil || !strings.Contains(err.Error(), "Link meshd0 not known") || !strings.Contains(err.Error(), "dig @100.64.0.1") {
		t.Fatalf("error %v: want resolvectl's message and how to use the resolver", err)
	}
	if o.Mode() != OSManual {
		t.Errorf("mode %q", o.Mode())
	}
	rec.lines = nil
	o.Close(context.Background())
	if len(rec.lines) != 0 {
		t.Errorf("reverted %q after a failed set", rec.lines)
	}
}
