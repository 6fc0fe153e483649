// Package bench holds the benchmarks of issue 8 that run the meshd binary
// in the namespace lab (internal/lab). They are Go benchmarks, so `go test
// ./...` does not run them; as root:
//
//	go test ./bench -run '^$' -bench Setup -benchtime 10x -v
package bench

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"

	"meshd/internal/lab"
)

func TestMain(m *testing.M) { lab.Main(m) }

// BenchmarkSetup measures connection setup (issue 8, item 2): each
// iteration starts a fresh agent (new key, new state) behind its own home
// router and measures, from the agent's start, the first ping answered by a
// peer behind another home router, and the moment the agent's status shows
// the direct path. It reports the median and p90 of both.
func BenchmarkSetup(b *testing.B) {
	ctx := context.Background()
	l := lab.New(b)
	srv := lab.StartServer(ctx, b, l.Host("srv", nil))
	peer := lab.StartAgents(ctx, b, srv.Join, l.Host("peer", l.Router("rpeer", lab.Home)))[0]
	target := peer.OverlayIP()

	var pings, directs []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		h := l.Host(fmt.Sprintf("n%d", i), l.Router(fmt.Sprintf("r%d", i), lab.Home))
		a := lab.NewAgent(b, h, srv.Join)
		b.StartTimer()
		start := time.Now()
		lab.SkipIfNotBuilt(b, a.Launch())
		ping, err := firstPing(ctx, h, target, 30*time.Second)
		if err != nil {
			lab.SkipIfNotBuilt(b, a.WaitReady(ctx)) // a placeholder agent: skip
			b.Fatalf("iteration %d: %v", i, err)
		}
		pings = append(pings, ping.Sub(start))
		b.StopTimer()
		lab.SkipIfNotBuilt(b, a.WaitReady(ctx))
		dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		_, err = a.WaitStatus(dctx, "direct path to the peer", func(st *lab.Status) bool {
			p := st.Peer(target)
			return p != nil && p.State == "connected" && p.Path == "direct"
		})
		cancel()
		if err != nil {
			b.Fatalf("iteration %d: %v", i, err)
		}
		directs = append(directs, time.Since(start))
		a.Proc.Stop()
	}
	b.StopTimer()
	report(b, "first-ping", pings)
	report(b, "direct", directs)
}

// firstPing pings addr from h every 10 ms until an answer and returns when
// it came. Before the agent has made its interface there is no route and
// ping exits at once; it is started again.
func firstPing(ctx context.Context, h *lab.Host, addr netip.Addr, timeout time.Duration) (time.Time, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var err error
	for try := 0; try < 100000 && ctx.Err() == nil; try++ {
		if _, err = h.Run(ctx, "ping", "-n", "-q", "-c", "1", "-i", "0.01", "-w", "5", addr.String()); err == nil {
			return time.Now(), nil
		}
		t := time.NewTimer(10 * time.Millisecond) // paces the restarts
		select {
		case <-t.C:
		case <-ctx.Done():
		}
		t.Stop()
	}
	return time.Time{}, fmt.Errorf("no answer from %s within %v: %v", addr, timeout, err)
}

// report logs and reports the median and p90 of ds in milliseconds.
func report(b *testing.B, what string, ds []time.Duration) {
	if len(ds) == 0 {
		return
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	p := func(q float64) float64 { return float64(s[int(q*float64(len(s)-1)+0.5)]) / float64(time.Millisecond) }
	b.ReportMetric(p(0.5), "ms/"+what+"-p50")
	b.ReportMetric(p(0.9), "ms/"+what+"-p90")
	b.Logf("%s over %d runs: median %.0f ms, p90 %.0f ms, all %v", what, len(s), p(0.5), p(0.9), s)
}
