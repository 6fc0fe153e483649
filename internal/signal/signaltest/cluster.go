package signaltest

import (
	"context"
	"encoding/binary"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"meshd/internal/cluster"
	"meshd/internal/keys"
	"meshd/internal/signal"
)

// benchLimits lift the per-peer rate limit: the benchmark measures what
// the instances carry, not what one peer may send.
var benchLimits = signal.Options{RatePerSecond: 1e9, Burst: 1e9}

// NewCluster returns the cluster of one more signal instance; every call
// of one NewCluster joins the same network (cluster.Group.Join, or a
// replica of the PostgreSQL cluster on one database).
type NewCluster func(tb testing.TB) cluster.Cluster

// GroupClusters returns a NewCluster whose instances share g.
func GroupClusters(g *cluster.Group) NewCluster {
	return func(testing.TB) cluster.Cluster { return g.Join() }
}

// Instance is one signal instance of StartInstances and its cluster.
type Instance struct {
	*Harness
	Cluster cluster.Cluster
}

// StartInstances starts n signal servers with opts, each with a cluster
// from join: one signal service on n instances. The test's cleanup closes
// each server, then its cluster.
func StartInstances(tb testing.TB, n int, opts Options, join NewCluster) []*Instance {
	tb.Helper()
	out := make([]*Instance, n)
	for i := range out {
		c := join(tb)
		tb.Cleanup(func() { _ = c.Close() }) // runs after the server's
		o := opts
		o.Signal.Cluster = c
		out[i] = &Instance{Harness: Start(tb, o), Cluster: c}
	}
	return out
}

// countingCluster counts what goes over the bus.
type countingCluster struct {
	cluster.Cluster
	publishes, bytes atomic.Int64
}

func (c *countingCluster) Publish(ctx context.Context, channel string, payload []byte) error {
	c.publishes.Add(1)
	c.bytes.Add(int64(len(payload)))
	return c.Cluster.Publish(ctx, channel, payload)
}

// BenchCrossInstance measures signal messages a second between two signal
// instances joined by clusters from join: pairs of real signalclient peers
// over loopback, one of each pair on each instance, half the pairs sending
// from the first instance to the second and half the other way. Each
// sender keeps at most window messages on their way to its partner (an
// end-to-end window: signal answers QUEUED when an envelope is handed to
// the other instance, before it arrives), so the figure is what arrives,
// nothing lost. It reports msgs/s, the p50 and p99 latency from Send to
// the recipient's handler, envelopes per bus payload and bytes per
// payload.
//
// With across false both peers of every pair are on the first instance:
// the same load without the bus, for comparison.
func BenchCrossInstance(b *testing.B, join NewCluster, across bool, pairs, window, payloadBytes int) {
	var counters []*countingCluster
	counting := func(tb testing.TB) cluster.Cluster {
		c := &countingCluster{Cluster: join(tb)}
		counters = append(counters, c)
		return c
	}
	in := StartInstances(b, 2, Options{Quiet: true, H2C: true, Signal: benchLimits}, counting)
	base := time.Now()
	var (
		measuring atomic.Bool
		received  atomic.Int64
		warm      atomic.Int64
		mu        sync.Mutex
		latencies = make([]time.Duration, 0, b.N)
		allIn     = make(chan struct{})
		windows   = make([]chan struct{}, pairs)
	)
	for i := range windows {
		windows[i] = make(chan struct{}, window)
	}
	onMessage := func(_ keys.Key, p []byte) {
		if len(p) < 12 {
			return
		}
		pair := int(binary.BigEndian.Uint32(p))
		if pair < len(windows) {
			<-windows[pair]
		}
		if !measuring.Load() {
			warm.Add(1)
			return
		}
		lat := time.Since(base) - time.Duration(binary.BigEndian.Uint64(p[4:]))
		mu.Lock()
		latencies = append(latencies, lat)
		mu.Unlock()
		if received.Add(1) == int64(b.N) {
			close(allIn)
		}
	}
	type pair struct{ from, to *Peer }
	ps := make([]pair, pairs)
	for i := range ps {
		x := in[0].Peer(b, PeerOptions{Quiet: true, OnMessage: onMessage})
		other := in[1]
		if !across {
			other = in[0]
		}
		y := other.Peer(b, PeerOptions{Quiet: true, OnMessage: onMessage})
		if i%2 == 1 {
			x, y = y, x
		}
		ps[i] = pair{x, y}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	send := func(i, n int) {
		p := make([]byte, max(12, payloadBytes))
		binary.BigEndian.PutUint32(p, uint32(i))
		for range n {
			select {
			case windows[i] <- struct{}{}:
			case <-ctx.Done():
				return
			}
			binary.BigEndian.PutUint64(p[4:], uint64(time.Since(base)))
			if err := ps[i].from.Send(ctx, ps[i].to.PublicKey(), p); err != nil {
				b.Errorf("pair %d: %v", i, err)
				return
			}
		}
	}
	// Warm up: the pairs' boxes, and every link between the instances.
	var wg sync.WaitGroup
	for i := range ps {
		wg.Go(func() { send(i, 1) })
	}
	wg.Wait()
	for warm.Load() < int64(pairs) {
		select {
		case <-ctx.Done():
			b.Fatalf("warm-up: %d of %d arrived", warm.Load(), pairs)
		case <-time.After(time.Millisecond):
		}
	}
	if b.N == 0 {
		return
	}
	pub0, bytes0 := int64(0), int64(0)
	for _, c := range counters {
		pub0, bytes0 = pub0+c.publishes.Load(), bytes0+c.bytes.Load()
	}
	measuring.Store(true)
	b.ResetTimer()
	start := time.Now()
	for i := range ps {
		n := b.N / pairs
		if i < b.N%pairs {
			n++
		}
		wg.Go(func() { send(i, n) })
	}
	wg.Wait()
	select {
	case <-allIn:
	case <-ctx.Done():
		b.Fatalf("%d of %d messages arrived", received.Load(), b.N)
	}
	elapsed := time.Since(start)
	b.StopTimer()
	pubs, bytes := int64(0), int64(0)
	for _, c := range counters {
		pubs, bytes = pubs+c.publishes.Load(), bytes+c.bytes.Load()
	}
	pubs, bytes = pubs-pub0, bytes-bytes0
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "msgs/s")
	mu.Lock()
	slices.Sort(latencies)
	b.ReportMetric(float64(latencies[len(latencies)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(latencies[len(latencies)*99/100].Microseconds()), "p99-µs")
	mu.Unlock()
	if pubs > 0 {
		b.ReportMetric(float64(b.N)/float64(pubs), "msgs/publish")
		b.ReportMetric(float64(bytes)/float64(pubs), "B/publish")
	}
	var lost uint64
	for _, x := range in {
		s := x.Signal.Stats()
		lost += s.RemoteDropped + s.RemoteLost
	}
	if lost > 0 {
		b.Errorf("%d envelopes lost between the instances", lost)
	}
}
