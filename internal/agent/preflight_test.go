package agent

import (
	"context"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"meshd/wg"
	"meshd/wg/wgtest"
)

// TestBusyPortStopsBeforeLogin: with the WireGuard port taken the engine
// never logs in (no peer registered, no setup key used), Run returns an
// error naming --port instead of idling, and status says "stopped".
func TestBusyPortStopsBeforeLogin(t *testing.T) {
	h := newHarness(t)
	busy, err := net.ListenPacket("udp4", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	port := uint16(busy.LocalAddr().(*net.UDPAddr).Port)
	made := false
	e, err := New(Options{
		StateDir: filepath.Join(t.TempDir(), "state"), ControlURL: "fake://control", SetupKey: "SETUP", Hostname: "busy",
		Device: wg.Config{Mode: wg.ModeNetstack, Name: "meshd-test", ListenPort: port},
		Check:  wg.Check,
		NewDevice: func(_ context.Context, cfg wg.Config) (wg.Device, error) {
			made = true
			return wgtest.New(cfg.Name, cfg.ListenPort), nil
		},
		Clients: fakeClients(h.hub, h.bus),
		Log:     zaptest.NewLogger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = e.Run(ctx)
	if ctx.Err() != nil {
		t.Fatal("Run idled until its context ended instead of returning the error")
	}
	if err == nil || !strings.Contains(err.Error(), "--port") {
		t.Fatalf("Run: %v, want an error naming --port", err)
	}
	h.hub.mu.Lock()
	logins, joined := h.hub.logins, len(h.hub.joined)
	h.hub.mu.Unlock()
	if logins != 0 || joined != 0 || made {
		t.Fatalf("logins %d, peers registered %d, device made %v: want none", logins, joined, made)
	}
	if st := e.Status(); st.State != "stopped" || !strings.Contains(st.Message, "--port") {
		t.Errorf("status %q %q", st.State, st.Message)
	}
}

// TestDeviceFailureStopsTheAgent: a device that cannot be made (after
// login) ends Run with the error rather than leaving the agent idle.
func TestDeviceFailureStopsTheAgent(t *testing.T) {
	h := newHarness(t)
	e, err := New(Options{
		StateDir: filepath.Join(t.TempDir(), "state"), ControlURL: "fake://control", SetupKey: "SETUP", Hostname: "nodev",
		Device: wg.Config{Mode: wg.ModeNetstack, Name: "meshd-test"},
		NewDevice: func(context.Context, wg.Config) (wg.Device, error) {
			return nil, wg.ErrUnsupported
		},
		Clients: fakeClients(h.hub, h.bus),
		Log:     zaptest.NewLogger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.Run(ctx); ctx.Err() != nil || err == nil {
		t.Fatalf("Run: %v (context: %v), want the device error", err, ctx.Err())
	}
}
