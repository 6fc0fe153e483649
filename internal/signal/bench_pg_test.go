//go:build linux

package signal_test

import (
	"context"
	"fmt"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"

	"meshd/internal/cluster"
	"meshd/internal/pgtest"
	"meshd/internal/signal/signaltest"
	"meshd/store"
	"meshd/store/pgcluster"
)

// BenchmarkCrossInstancePG is BenchmarkCrossInstance over the PostgreSQL
// cluster: two signal instances, each with its own pgcluster replica on one
// database (LISTEN/NOTIFY), as `meshd signal --store postgres://...` runs
// them. Besides msgs/s it reports CPU per message in this process (both
// instances, the peers, both clusters) and in PostgreSQL. It skips without
// PostgreSQL.
//
//	go test ./internal/signal -run '^$' -bench CrossInstancePG -benchtime 100000x
func BenchmarkCrossInstancePG(b *testing.B) {
	srv := pgtest.Shared(b)
	for _, pairs := range []int{1, 64} {
		b.Run(fmt.Sprintf("across/pairs=%d", pairs), func(b *testing.B) {
			dsn := srv.NewDatabase(b)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
			defer cancel()
			st, err := store.Open(ctx, dsn) // the cluster's tables
			if err != nil {
				b.Fatal(err)
			}
			st.Close()
			join := func(tb testing.TB) cluster.Cluster {
				c, err := pgcluster.Open(ctx, dsn, zaptest.NewLogger(tb, zaptest.Level(zapcore.WarnLevel)))
				if err != nil {
					tb.Fatal(err)
				}
				// A replica is live to the others once it has a heartbeat
				// (as `meshd signal` records at its start); one with a ttl
				// longer than the benchmark does.
				r := cluster.Replica{ID: c.Self(), SignalURL: "https://signal.test", Started: time.Now()}
				if _, err := c.Heartbeat(ctx, r, 30*time.Minute); err != nil {
					tb.Fatal(err)
				}
				return c
			}
			pg0, err := srv.CPUTime()
			if err != nil {
				b.Fatal(err)
			}
			go0 := selfCPU()
			signaltest.BenchCrossInstance(b, join, true, pairs, 64, 150)
			pg1, err := srv.CPUTime()
			if err != nil {
				b.Fatal(err)
			}
			if b.N > 0 {
				b.ReportMetric(float64((selfCPU()-go0).Microseconds())/float64(b.N), "go-µs/msg")
				b.ReportMetric(float64((pg1-pg0).Microseconds())/float64(b.N), "pg-µs/msg")
			}
		})
	}
}

func selfCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
