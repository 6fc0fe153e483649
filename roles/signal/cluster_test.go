package signal

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"meshd/internal/cluster"
	"meshd/internal/signal"
	"meshd/internal/signal/signaltest"
	"meshd/internal/testutil"
)

// flaky is a cluster whose heartbeats fail while fail is set.
type flaky struct {
	cluster.Cluster
	fail   atomic.Bool
	failed atomic.Int64 // heartbeats refused
}

func (f *flaky) Heartbeat(ctx context.Context, r cluster.Replica, ttl time.Duration) ([]cluster.Replica, error) {
	if f.fail.Load() {
		f.failed.Add(1)
		return nil, cluster.ErrUnavailable
	}
	return f.Cluster.Heartbeat(ctx, r, ttl)
}

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// alive reports whether the observer's heartbeat sees id.
func alive(t *testing.T, observer cluster.Cluster, id string, ttl time.Duration) bool {
	t.Helper()
	rs, err := observer.Heartbeat(context.Background(), cluster.Replica{}, ttl)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rs {
		if r.ID == id {
			return true
		}
	}
	return false
}

func TestStandaloneSignalHeartbeatsAndRestoresPresence(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1_700_000_000, 0)}
	g := cluster.NewGroup(clk.now)
	c := &flaky{Cluster: g.Join()}
	observer := g.Join()
	const every = 10 * time.Millisecond
	ttl := MissedHeartbeats * every
	h := signaltest.Start(t, signaltest.Options{Signal: signal.Options{Cluster: c}})
	p := h.Peer(t, signaltest.PeerOptions{})
	pk := signal.PresenceKey(p.PublicKey(), "")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cfg := Config{Cluster: c, Heartbeat: every, Replica: cluster.Replica{SignalURL: "https://signal.example:10000"}}
	if err := startHeartbeats(ctx, cfg, h.Signal, zaptest.NewLogger(t)); err != nil {
		t.Fatal(err)
	}
	rs, err := observer.Heartbeat(ctx, cluster.Replica{}, ttl)
	if err != nil || len(rs) != 2 {
		t.Fatalf("replicas after start: %+v, %v", rs, err)
	}
	for _, r := range rs {
		if r.ID == c.Self() && r.SignalURL != cfg.Replica.SignalURL {
			t.Fatalf("signal's replica: %+v", r)
		}
	}
	// The loop keeps it alive as time passes.
	clk.add(2 * ttl)
	testutil.WaitFor(t, 10*time.Second, "signal's heartbeat after the clock moved", func() bool {
		return alive(t, observer, c.Self(), ttl)
	})

	// Heartbeats fail for longer than the ttl: the cluster forgets the
	// replica and the keys registered at it...
	c.fail.Store(true)
	testutil.WaitFor(t, 10*time.Second, "the failing replica to be forgotten", func() bool {
		clk.add(ttl + time.Millisecond)
		return c.failed.Load() > 0 && !alive(t, observer, c.Self(), ttl)
	})
	if ids, _ := observer.Present(ctx, pk); len(ids) != 0 {
		t.Fatalf("presence of a forgotten replica: %v", ids)
	}
	// ...and once they work again, signal records its keys again.
	c.fail.Store(false)
	testutil.WaitFor(t, 10*time.Second, "the registered key to be present again", func() bool {
		ids, err := observer.Present(ctx, pk)
		return err == nil && len(ids) == 1 && ids[0] == c.Self()
	})

	// When ctx ends, the heartbeats stop: the others forget it.
	cancel()
	testutil.WaitFor(t, 10*time.Second, "a stopped signal to be forgotten", func() bool {
		clk.add(ttl + time.Millisecond)
		return !alive(t, observer, c.Self(), ttl)
	})
}

func TestStartFailsWhenTheFirstHeartbeatFails(t *testing.T) {
	c := &flaky{Cluster: cluster.Local()}
	defer c.Close()
	c.fail.Store(true)
	sig := signal.New(signal.Options{Cluster: c})
	defer sig.Close()
	err := startHeartbeats(context.Background(), Config{Cluster: c, Heartbeat: time.Second}, sig, zaptest.NewLogger(t))
	if !errors.Is(err, cluster.ErrUnavailable) {
		t.Fatalf("first heartbeat failing: %v, want ErrUnavailable", err)
	}
}
