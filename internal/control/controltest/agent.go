package controltest

import (
	"context"
	"net/http"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"

	controlv1 "meshd/api/control/v1"
	"meshd/internal/controlclient"
	"meshd/internal/keys"
)

// Map is a network map.
type Map = controlv1.NetworkMap

// WaitTimeout bounds every wait of the harness unless Patience says
// otherwise.
const WaitTimeout = 10 * time.Second

// AgentOptions describe a fake agent.
type AgentOptions struct {
	Hostname string
	// SetupKey to join with; empty: the bootstrap key.
	SetupKey string
	// HTTPClient; nil: the harness's shared client.
	HTTPClient *http.Client
	// Key; zero: a new one.
	Key keys.Private
	// Stalled agents block in their map callback until Release.
	Stalled bool
	// NoSync: log in only; the test starts Sync with StartSync.
	NoSync bool
	// FullMapsOnly: the agent does not ask for map updates (as agents
	// before them).
	FullMapsOnly bool
	// PostQuantum: the agent says it supports post-quantum keys.
	PostQuantum bool
}

// Agent is a fake agent: a real key and a controlclient, recording the maps
// it receives.
type Agent struct {
	Name   string
	Key    keys.Private
	Client *controlclient.Client
	Self   *controlv1.SelfConfig

	h       *Harness
	mu      sync.Mutex
	cond    chan struct{} // closed and replaced on every event
	latest  *Map
	serials []uint64
	up      bool
	done    bool
	err     error // what Sync returned
	gate    chan struct{}
	cancel  context.CancelFunc
	stopped chan struct{}
}

// AddAgent joins a new agent and starts its Sync (unless NoSync). It fails
// the test when the login fails; use NewAgent and Login to test refusals.
func (h *Harness) AddAgent(o AgentOptions) *Agent {
	h.tb.Helper()
	a := h.NewAgent(o)
	if err := a.Login(o.SetupKey); err != nil {
		h.tb.Fatalf("controltest: agent %s: login: %v", a.Name, err)
	}
	if !o.NoSync {
		a.StartSync()
	}
	return a
}

// NewAgent makes an agent that has not logged in.
func (h *Harness) NewAgent(o AgentOptions) *Agent {
	h.tb.Helper()
	if o.Key.IsZero() {
		var err error
		if o.Key, err = keys.Generate(); err != nil {
			h.tb.Fatal(err)
		}
	}
	hc := o.HTTPClient
	if hc == nil {
		hc = h.HTTPClient()
	}
	log := zaptest.NewLogger(h.tb).Named(o.Hostname)
	if h.cfg.quiet {
		log = zaptest.NewLogger(h.tb, zaptest.Level(zapcore.WarnLevel)).Named(o.Hostname)
	}
	c, err := controlclient.New(controlclient.Options{URL: h.URL, Private: o.Key, HTTPClient: hc, Log: log,
		Meta:       controlclient.Meta{Hostname: o.Hostname, OS: "linux", Version: "test", PostQuantum: o.PostQuantum},
		MinBackoff: 5 * time.Millisecond, MaxBackoff: 100 * time.Millisecond, HeartbeatTimeout: 5 * time.Second,
		FullMapsOnly: o.FullMapsOnly})
	if err != nil {
		h.tb.Fatal(err)
	}
	a := &Agent{Name: o.Hostname, Key: o.Key, Client: c, h: h, cond: make(chan struct{})}
	if o.Stalled {
		a.gate = make(chan struct{})
	}
	return a
}

// Login logs the agent in with setupKey ("": the bootstrap key; use
// LoginWith to log in without any key).
func (a *Agent) Login(setupKey string) error {
	if setupKey == "" {
		setupKey = a.h.Boot.SetupKey
	}
	return a.LoginWith(setupKey)
}

// LoginWith logs in with exactly setupKey, which may be empty.
func (a *Agent) LoginWith(setupKey string) error {
	ctx, cancel := context.WithTimeout(context.Background(), a.h.cfg.patience)
	defer cancel()
	self, err := a.Client.Login(ctx, setupKey)
	if err == nil {
		a.Self = self
	}
	return err
}

// StartSync runs Sync until the test ends or Stop.
func (a *Agent) StartSync() {
	ctx, cancel := context.WithCancel(context.Background())
	a.cancel, a.stopped = cancel, make(chan struct{})
	a.h.tb.Cleanup(a.Stop)
	go func() {
		defer close(a.stopped)
		err := a.Client.Sync(ctx, a.onMap, a.onState)
		a.event(func() { a.done, a.err = true, err })
	}()
}

// Stop ends the agent's Sync and waits for it.
func (a *Agent) Stop() {
	if a.cancel == nil {
		return
	}
	a.cancel()
	a.Release()
	<-a.stopped
}

// Release lets a stalled agent read again.
func (a *Agent) Release() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.gate != nil {
		close(a.gate)
		a.gate = nil
	}
}

func (a *Agent) onMap(m *Map) {
	a.mu.Lock()
	gate := a.gate
	a.mu.Unlock()
	if gate != nil {
		<-gate
	}
	a.event(func() {
		a.latest = m
		a.serials = append(a.serials, m.Serial)
	})
}

func (a *Agent) onState(up bool, err error) { a.event(func() { a.up = up }) }

// event changes the agent's record and wakes waiters.
func (a *Agent) event(fn func()) {
	a.mu.Lock()
	defer a.mu.Unlock()
	fn()
	close(a.cond)
	a.cond = make(chan struct{})
}

// Latest returns the newest map (nil before the first).
func (a *Agent) Latest() *Map {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.latest
}

// Serials returns the serials of every map received, in order.
func (a *Agent) Serials() []uint64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]uint64(nil), a.serials...)
}

// Count returns how many maps the agent received.
func (a *Agent) Count() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.serials)
}

// Connected reports whether the agent's stream is up.
func (a *Agent) Connected() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.up
}

// waitUntil waits until cond holds (checked under the agent's lock).
func (a *Agent) waitUntil(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.NewTimer(a.h.cfg.patience)
	defer deadline.Stop()
	for {
		a.mu.Lock()
		ok, ch := cond(), a.cond
		a.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-ch:
		case <-deadline.C:
			tb.Fatalf("controltest: agent %s: no %s within %s (maps %v, err %v)", a.Name, what, a.h.cfg.patience, a.Serials(), a.SyncErr())
		}
	}
}

// WaitFor waits until the agent's newest map satisfies pred and returns it.
func (a *Agent) WaitFor(tb testing.TB, what string, pred func(*Map) bool) *Map {
	tb.Helper()
	var m *Map
	a.waitUntil(tb, what, func() bool { m = a.latest; return m != nil && pred(m) })
	return m
}

// WaitCount waits until the agent received at least n maps.
func (a *Agent) WaitCount(tb testing.TB, n int) {
	tb.Helper()
	a.waitUntil(tb, itoa(n)+" maps", func() bool { return len(a.serials) >= n })
}

// WaitDone waits until Sync returned and returns its error.
func (a *Agent) WaitDone(tb testing.TB) error {
	tb.Helper()
	a.waitUntil(tb, "end of sync", func() bool { return a.done })
	return a.SyncErr()
}

// SyncErr is what Sync returned (nil while it runs).
func (a *Agent) SyncErr() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.err
}

// PeerNames returns the names of the peers in m.
func PeerNames(m *Map) []string {
	var out []string
	for _, p := range m.Peers {
		out = append(out, p.Name)
	}
	return out
}
