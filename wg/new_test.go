package wg

import (
	"context"
	"net/netip"
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"meshd/internal/keys"
)

// TestAutoMeansUserspace: auto (and an empty mode) is userspace WireGuard
// whether or not the kernel module exists; kernel mode is taken only when
// named, and the other modes stay as given.
func TestAutoMeansUserspace(t *testing.T) {
	for in, want := range map[Mode]Mode{
		ModeAuto:      ModeUserspace,
		"":            ModeUserspace,
		ModeUserspace: ModeUserspace,
		ModeKernel:    ModeKernel,
		ModeNetstack:  ModeNetstack,
	} {
		if got := Resolve(in); got != want {
			t.Errorf("Resolve(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestNewLogsTheMode: New says which WireGuard mode it chose (netstack
// here: it needs no root).
func TestNewLogsTheMode(t *testing.T) {
	core, logs := observer.New(zapcore.InfoLevel)
	priv, _ := keys.Generate()
	d, err := New(context.Background(), Config{Mode: ModeNetstack, PrivateKey: priv, Address: mustPrefix(t, "100.64.0.9/16"), Log: zap.New(core)})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	found := false
	for _, e := range logs.FilterMessage("WireGuard mode").All() {
		if e.ContextMap()["mode"] == string(ModeNetstack) {
			found = true
		}
	}
	if !found {
		t.Errorf("no log line naming the mode: %v", logs.All())
	}
}

func TestUnknownModeNamesTheChoices(t *testing.T) {
	priv, _ := keys.Generate()
	_, err := New(context.Background(), Config{Mode: "fast", PrivateKey: priv, Address: mustPrefix(t, "100.64.0.9/16")})
	if err == nil || !strings.Contains(err.Error(), "userspace") {
		t.Fatalf("err = %v, want one naming the modes", err)
	}
}

func mustPrefix(t *testing.T, s string) netip.Prefix {
	t.Helper()
	p, err := netip.ParsePrefix(s)
	if err != nil {
		t.Fatal(err)
	}
	return p
}
