package controltest

import (
	"context"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"

	"meshd/store"
	"meshd/store/pgcluster"
)

// OnStore opens the database at target (a PostgreSQL URL or a SQLite file)
// rather than meshd.db in the data directory.
func OnStore(target string) Option { return func(c *config) { c.store = target } }

// NewPGReplicas starts n replicas of control on the PostgreSQL database at
// dsn, each with its own store connection and its own pgcluster replica
// (LISTEN/NOTIFY, presence and leases in that database), as `meshd control
// --store postgres://...` runs them. The first bootstraps the network.
func NewPGReplicas(tb testing.TB, dsn string, n int, opts ...Option) []*Harness {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st, err := store.Open(ctx, dsn) // the schema pgcluster needs
	if err != nil {
		tb.Fatalf("controltest: open store: %v", err)
	}
	st.Close()
	clock := NewClock(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC))
	var out []*Harness
	for i := range n {
		c, err := pgcluster.Open(ctx, dsn, zaptest.NewLogger(tb, zaptest.Level(zapcore.WarnLevel)))
		if err != nil {
			tb.Fatalf("controltest: open cluster: %v", err)
		}
		tb.Cleanup(func() { _ = c.Close() }) // after the replica's stop
		o := append([]Option{OnStore(dsn), WithCluster(c), withClock(clock)}, opts...)
		if i > 0 {
			o = append(o, withBoot(out[0].Boot))
		}
		out = append(out, NewHarness(tb, 0, o...))
	}
	return out
}
