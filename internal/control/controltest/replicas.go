package controltest

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"meshd/internal/cluster"
	"meshd/internal/control"
	"meshd/store"
)

// NewReplicas starts n replicas of control on one database file, each with
// its own store connection, its own TLS server and URL, and one replica of
// a shared cluster.Group (the in-process cluster), on one clock. The first
// bootstraps the network; the admin token and setup key work on every
// replica. Agents of a replica's Harness join and stream through it.
func NewReplicas(tb testing.TB, n int, opts ...Option) []*Harness {
	tb.Helper()
	dir := tb.TempDir()
	clock := NewClock(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC))
	g := cluster.NewGroup(clock.Now)
	var out []*Harness
	for i := range n {
		o := append([]Option{WithDir(dir), WithCluster(g.Join()), withClock(clock)}, opts...)
		if i > 0 {
			o = append(o, withBoot(out[0].Boot))
		}
		out = append(out, NewHarness(tb, 0, o...))
	}
	return out
}

// WithCluster makes the service a replica of c.
func WithCluster(c cluster.Cluster) Option { return func(cfg *config) { cfg.cluster = c } }

// WrapCluster puts fn's cluster between a replica and its cluster (to lose
// messages, for example).
func WrapCluster(fn func(cluster.Cluster) cluster.Cluster) Option {
	return func(cfg *config) { cfg.wrap = fn }
}

func withClock(c *Clock) Option { return func(cfg *config) { cfg.clock = c } }

func withBoot(b control.Bootstrap) Option { return func(cfg *config) { cfg.boot = &b } }

// FaultyStore passes every call to Store until Lose, then fails each with
// an error wrapping cluster.ErrUnavailable (as a lost PostgreSQL does)
// until Restore.
type FaultyStore struct {
	*store.Store

	mu    sync.Mutex
	lost  error
	loads int
}

// Loads is how many times the service loaded a whole account.
func (f *FaultyStore) Loads() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.loads
}

var _ control.Store = (*FaultyStore)(nil)

// Lose makes every call fail with reason.
func (f *FaultyStore) Lose(reason string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lost = fmt.Errorf("%w: %s", cluster.ErrUnavailable, reason)
}

// Restore lets calls through again.
func (f *FaultyStore) Restore() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lost = nil
}

func (f *FaultyStore) check() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.lost
}

func (f *FaultyStore) Write(ctx context.Context, fn func(*store.Tx) error) error {
	if err := f.check(); err != nil {
		return err
	}
	return f.Store.Write(ctx, fn)
}

func (f *FaultyStore) Accounts(ctx context.Context) ([]store.Account, error) {
	if err := f.check(); err != nil {
		return nil, err
	}
	return f.Store.Accounts(ctx)
}

func (f *FaultyStore) LoadAccount(ctx context.Context, id string) (*store.AccountData, error) {
	f.mu.Lock()
	f.loads++
	f.mu.Unlock()
	if err := f.check(); err != nil {
		return nil, err
	}
	return f.Store.LoadAccount(ctx, id)
}

func (f *FaultyStore) AdminTokens(ctx context.Context) ([]store.AdminToken, error) {
	if err := f.check(); err != nil {
		return nil, err
	}
	return f.Store.AdminTokens(ctx)
}

func (f *FaultyStore) TouchAdminToken(ctx context.Context, id string, at time.Time) error {
	if err := f.check(); err != nil {
		return err
	}
	return f.Store.TouchAdminToken(ctx, id, at)
}

func (f *FaultyStore) Events(ctx context.Context, accountID string, limit int) ([]store.Event, error) {
	if err := f.check(); err != nil {
		return nil, err
	}
	return f.Store.Events(ctx, accountID, limit)
}

func (f *FaultyStore) SecretOrCreate(ctx context.Context, name string, gen func() ([]byte, error)) ([]byte, error) {
	if err := f.check(); err != nil {
		return nil, err
	}
	return f.Store.SecretOrCreate(ctx, name, gen)
}

func (f *FaultyStore) TakeSerials(ctx context.Context, accountID string, n int) (uint64, error) {
	if err := f.check(); err != nil {
		return 0, err
	}
	return f.Store.TakeSerials(ctx, accountID, n)
}

func (f *FaultyStore) SetPeerLastSeen(ctx context.Context, peerID string, at time.Time) error {
	if err := f.check(); err != nil {
		return err
	}
	return f.Store.SetPeerLastSeen(ctx, peerID, at)
}

func (f *FaultyStore) LoadSSO(ctx context.Context, accountID string) (*store.SSOData, error) {
	if err := f.check(); err != nil {
		return nil, err
	}
	return f.Store.LoadSSO(ctx, accountID)
}
