package signal_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"meshd/internal/keys"
	"meshd/internal/signal/signaltest"
)

// benchPeers connect; each talks to benchPartners of them.
var benchPeers, benchPartners = 1000, 8

// BenchmarkForward measures signal with 1,000 connected peers, each a real
// signalclient on its own HTTP/2 connection over loopback to a signal
// server in a process of its own (so that its CPU time is its own). Every peer talks
// to benchPartners others (as an agent talks to the peers of its map) and
// sends to them as fast as signal answers: Send waits for the Delivery, so
// "inflight" is how many sends each peer has open at once (1: one
// conversation at a time; 8: one per partner, as at an agent's start). One
// warm-up message per pair before the clock starts computes the pair's box
// (two Curve25519 multiplications per pair, once), which would otherwise
// dominate.
//
// The rate=N variants pace the peers to N messages a second in all, for
// the latency at that load (closed loops saturate, and then the latency is
// only queueing). It reports messages per second (sealed by the sender, forwarded, opened
// and replay-checked by the recipient), the p50/p99 latency from Send to
// the recipient's handler, the CPU time per message of the server and of
// the clients (they share the cores, so msgs/s is a lower bound for the
// server alone: 2 cores / server-cpu-µs/msg is what it could do with the
// machine to itself), how many envelopes and answers signal wrote per
// stream write, and how many of the envelopes came in a ClientBatch.
//
//	go test ./internal/signal -run '^$' -bench Forward -benchtime 100000x
func BenchmarkForward(b *testing.B) {
	for _, h2c := range []bool{false, true} {
		proto := "tls"
		if h2c {
			proto = "h2c"
		}
		for _, inflight := range []int{1, 8} {
			b.Run(fmt.Sprintf("%s/inflight=%d", proto, inflight), func(b *testing.B) {
				benchForward(b, benchPeers, inflight, 0, 150, h2c)
			})
		}
		for _, rate := range []int{2000, 10000} {
			b.Run(fmt.Sprintf("%s/rate=%d", proto, rate), func(b *testing.B) {
				benchForward(b, benchPeers, 1, rate, 150, h2c)
			})
		}
	}
}

// benchForward runs b.N messages: closed loop (each peer keeps inflight
// sends open) when rate is 0, else paced at rate messages a second in all
// (each peer sends at rate/peers a second; a send that takes longer than
// the interval skips ticks, so msgs/s shows the rate achieved).
func benchForward(b *testing.B, peers, inflight, rate, payloadBytes int, h2c bool) {
	h := startBenchServer(b, h2c)
	base := time.Now()
	var (
		measuring atomic.Bool
		warm      atomic.Int64
		received  atomic.Int64
		latencies = make([]int64, b.N)
		allIn     = make(chan struct{})
	)
	onMessage := func(_ keys.Key, p []byte) {
		if !measuring.Load() {
			warm.Add(1)
			return
		}
		lat := int64(time.Since(base)) - int64(binary.BigEndian.Uint64(p))
		n := received.Add(1)
		if n <= int64(b.N) {
			latencies[n-1] = lat
		}
		if n == int64(b.N) {
			close(allIn)
		}
	}
	ps := make([]*signaltest.Peer, peers)
	for i := range ps {
		ps[i] = h.Peer(b, signaltest.PeerOptions{Quiet: true, NoWait: true, OnMessage: onMessage})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	for _, p := range ps {
		if err := p.WaitConnected(ctx); err != nil {
			b.Fatal(err)
		}
	}
	partner := func(i, k int) keys.Key { return ps[(i+1+k*len(ps)/benchPartners)%len(ps)].PublicKey() }

	// Warm up: one message per pair.
	var wg sync.WaitGroup
	for i, p := range ps {
		wg.Go(func() {
			for k := range benchPartners {
				if err := p.Send(ctx, partner(i, k), make([]byte, 8)); err != nil {
					b.Errorf("warm-up: %v", err)
				}
			}
		})
	}
	wg.Wait()
	tick := time.NewTicker(time.Millisecond)
	for warm.Load() < int64(peers*benchPartners) {
		select {
		case <-ctx.Done():
			b.Fatalf("warm-up: received %d of %d", warm.Load(), peers*benchPartners)
		case <-tick.C:
		}
	}
	tick.Stop()
	measuring.Store(true)

	var sent, refused atomic.Int64
	h.profile(b, true)
	stats0 := h.stats(b)
	srvCPU0 := h.cpu(b)
	srvR0, srvW0 := h.syscalls(b)
	b.ReportAllocs()
	b.ResetTimer()
	cpu0, sys0 := cpuTime(b)
	start := time.Now()
	for i, p := range ps {
		for j := range inflight {
			wg.Go(func() {
				payload := make([]byte, payloadBytes)
				var pace <-chan time.Time
				if rate > 0 {
					interval := time.Duration(float64(peers) / float64(rate) * float64(time.Second))
					// Spread the peers' first sends over one interval.
					select {
					case <-time.After(interval * time.Duration(i) / time.Duration(peers)):
					case <-ctx.Done():
						return
					}
					t := time.NewTicker(interval)
					defer t.Stop()
					pace = t.C
				}
				for n := 0; sent.Add(1) <= int64(b.N); n++ {
					if pace != nil {
						select {
						case <-pace:
						case <-ctx.Done():
							return
						}
					}
					// Conversation j of peer i goes around its partners.
					to := partner(i, (j+n*inflight)%benchPartners)
					binary.BigEndian.PutUint64(payload, uint64(time.Since(base)))
					if err := p.Send(ctx, to, payload); err != nil {
						refused.Add(1)
						b.Errorf("send: %v", err)
						return
					}
				}
			})
		}
	}
	wg.Wait()
	select {
	case <-allIn:
	case <-ctx.Done():
		b.Fatalf("received %d of %d", received.Load(), b.N)
	}
	elapsed := time.Since(start)
	cpu1, sys1 := cpuTime(b)
	srvCPU := h.cpu(b) - srvCPU0
	srvR, srvW := h.syscalls(b)
	srvRSS := h.rss(b)
	b.StopTimer()
	h.profile(b, false)
	stats := h.stats(b)

	slices.Sort(latencies)
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "msgs/s")
	b.ReportMetric(float64(latencies[len(latencies)/2])/1e3, "p50-µs")
	b.ReportMetric(float64(latencies[len(latencies)*99/100])/1e3, "p99-µs")
	b.ReportMetric(float64(srvCPU.Microseconds())/float64(b.N), "server-cpu-µs/msg")
	b.ReportMetric(float64(srvRSS)/(1<<20), "server-rss-MB")
	b.ReportMetric(float64(srvR-srvR0)/float64(b.N), "server-reads/msg")
	b.ReportMetric(float64(srvW-srvW0)/float64(b.N), "server-writes/msg")
	b.ReportMetric(float64((cpu1-cpu0).Microseconds())/float64(b.N), "clients-cpu-µs/msg")
	b.ReportMetric(float64((sys1-sys0).Microseconds())/float64(b.N), "clients-sys-µs/msg")
	items := (stats.Sent - stats0.Sent) + (stats.Queued - stats0.Queued)
	b.ReportMetric(float64(items)/float64(stats.Writes-stats0.Writes), "items/write")
	b.ReportMetric(100*float64(stats.Batched-stats0.Batched)/float64(b.N), "client-batched-%")
	b.ReportMetric(0, "ns/op")
	if n := refused.Load(); n > 0 {
		b.Fatalf("%d sends refused", n)
	}
}

// cpuTime is the CPU time the process has used (clients and server
// together), and the part of it spent in the kernel.
func cpuTime(tb testing.TB) (total, sys time.Duration) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		tb.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), time.Duration(ru.Stime.Nano())
}
