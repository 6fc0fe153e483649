package signal

import (
	"context"
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"

	signalv1 "meshd/api/signal/v1"
	"meshd/internal/cluster"
	"meshd/internal/keys"
	"meshd/internal/seal"
)

// counter is a Mailbox that counts what it is offered.
type counter struct {
	n    atomic.Int64
	want int64
	done chan struct{}
}

func (c *counter) Offer(*signalv1.Envelope) signalv1.DeliveryStatus {
	if c.n.Add(1) == c.want {
		close(c.done)
	}
	return signalv1.DeliveryStatus_DELIVERY_STATUS_QUEUED
}
func (c *counter) Replaced() {}

// slowPublish makes every Publish take a round trip first, as a database
// does.
type slowPublish struct {
	cluster.Cluster
	rtt       time.Duration
	publishes atomic.Int64
}

func (s *slowPublish) Publish(ctx context.Context, channel string, payload []byte) error {
	s.publishes.Add(1)
	if s.rtt > 0 {
		time.Sleep(s.rtt) // the simulated round trip, not a wait for a condition
	}
	return s.Cluster.Publish(ctx, channel, payload)
}

// BenchmarkClusterRoute measures the path between two instances alone, in
// one process: Route at one instance, the bus, the other instance's
// Offer to the recipient's mailbox (no streams, no HTTP). With rtt, every
// Publish first takes that long, as a round trip to PostgreSQL does: it
// shows what packing envelopes into payloads buys when publishing is slow.
//
//	go test ./internal/signal -run '^$' -bench ClusterRoute
func BenchmarkClusterRoute(b *testing.B) {
	for _, rtt := range []time.Duration{0, 500 * time.Microsecond} {
		b.Run(fmt.Sprintf("rtt=%s", rtt), func(b *testing.B) {
			g := cluster.NewGroup(nil)
			var st1, st2 remoteCounters
			c1 := &slowPublish{Cluster: g.Join(), rtt: rtt}
			c2 := g.Join()
			r1 := newClusterRouter(c1, zap.NewNop(), time.Now, &st1)
			r2 := newClusterRouter(c2, zap.NewNop(), time.Now, &st2)
			defer func() { r1.close(); r2.close(); c1.Close(); c2.Close() }()
			toPriv, _ := keys.Generate()
			fromPriv, _ := keys.Generate()
			to, from := toPriv.Public(), fromPriv.Public()
			mb := &counter{want: int64(b.N), done: make(chan struct{})}
			detach := r2.Attach(to, "acct", mb)
			defer detach()
			env := &signalv1.Envelope{From: from.Bytes()[:], To: to.Bytes()[:],
				Nonce: make([]byte, seal.NonceLen), Sealed: make([]byte, 150)}
			pub0 := c1.publishes.Load()
			b.ResetTimer()
			start := time.Now()
			full := 0
			for range b.N {
				for r1.Route(context.Background(), "acct", to, env) == signalv1.DeliveryStatus_DELIVERY_STATUS_QUEUE_FULL {
					full++
					runtime.Gosched()
				}
			}
			select {
			case <-mb.done:
			case <-time.After(time.Minute):
				b.Fatalf("%d of %d arrived (lost %d)", mb.n.Load(), b.N, st1.lost.Load())
			}
			elapsed := time.Since(start)
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "msgs/s")
			b.ReportMetric(float64(b.N)/float64(c1.publishes.Load()-pub0), "msgs/publish")
			b.ReportMetric(float64(full)/float64(b.N), "full-retries/msg")
		})
	}
}
