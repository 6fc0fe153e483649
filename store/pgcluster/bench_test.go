//go:build linux

package pgcluster_test

import (
	"context"
	"fmt"
	"sync"
	"syscall"
	"testing"
	"time"

	"meshd/internal/pgtest"
	"meshd/store/pgcluster"
)

// BenchmarkPublish measures messages per second from one replica to a
// subscriber on another (signal's offers and candidates between two
// instances): 256-byte messages from 1, 64 or 256 concurrent publishers, with
// and without batching many messages into one statement and one NOTIFY.
func BenchmarkPublish(b *testing.B) {
	srv := pgtest.Shared(b)
	for _, batched := range []bool{true, false} {
		for _, publishers := range []int{1, 64, 256} {
			name := fmt.Sprintf("batched=%v/publishers=%d", batched, publishers)
			b.Run(name, func(b *testing.B) {
				if !batched {
					defer pgcluster.SetBatchLimit(pgcluster.SetBatchLimit(1))
				}
				benchPublish(b, srv, publishers)
			})
		}
	}
}

func selfCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func benchPublish(b *testing.B, srv *pgtest.Server, publishers int) {
	dsn := srv.NewDatabase(b)
	migrate(b, dsn, pgcluster.SchemaVersion)
	from, to := open(b, dsn), open(b, dsn)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	sub, err := to.Subscribe(ctx, "bench")
	if err != nil {
		b.Fatal(err)
	}
	payload := make([]byte, 256)
	n := b.N
	received := make(chan struct{})
	var got, lost int
	go func() {
		defer close(received)
		for got < n {
			select {
			case m, ok := <-sub:
				if !ok {
					return
				}
				if m == nil {
					lost++
					continue
				}
				got++
			case <-time.After(5 * time.Second): // the rest was lost
				return
			}
		}
	}()
	b.SetBytes(int64(len(payload)))
	pgBefore, err := srv.CPUTime()
	if err != nil {
		b.Fatal(err)
	}
	goBefore := selfCPU()
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for p := range publishers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := p; i < n; i += publishers {
				if err := from.Publish(ctx, "bench", payload); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	<-received
	elapsed := time.Since(start)
	b.StopTimer()
	goCPU := selfCPU() - goBefore
	pgAfter, err := srv.CPUTime()
	if err != nil {
		b.Fatal(err)
	}
	if got < n {
		b.Logf("%d of %d messages arrived (%d loss markers)", got, n, lost)
	}
	b.ReportMetric(float64(got)/elapsed.Seconds(), "msgs/s")
	b.ReportMetric(0, "ns/op")
	// Where the time goes, independent of what else runs on the machine:
	// CPU per message in this process (both replicas) and in PostgreSQL.
	b.ReportMetric(float64(goCPU.Microseconds())/float64(n), "go-µs/msg")
	b.ReportMetric(float64((pgAfter-pgBefore).Microseconds())/float64(n), "pg-µs/msg")
}
