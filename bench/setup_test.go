//go:build linux

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

const secSetup = "2. Connection setup"

// setupAnchor is NetBird v0.76.1's agent start → first ping in the same
// kind of lab on this machine: 0.26 s.
const setupAnchor = 260.0

// BenchmarkSetup measures connection setup: each
// iteration starts a fresh agent (new key, new state) behind its own home
// router and measures, from the agent's start, the first ping answered by a
// peer behind another home router, and the moment the agent's status shows
// the direct path. It reports the median and p90 of both. One lab for all
// iterations: -benchtime 10x is ten agents.
//
//	go test ./bench -run '^$' -bench Setup -benchtime 10x -v
func BenchmarkSetup(b *testing.B) {
	ctx := context.Background()
	l := lab.New(b)
	srv := lab.StartServer(ctx, b, l.Host("srv", nil))
	peer := lab.StartAgents(ctx, b, srv.Join, l.Host("peer", l.Router("rpeer", lab.Home)))[0]
	target := peer.OverlayIP()

	var pings, directs []time.Duration
	var loads []float64
	for i := 0; b.Loop(); i++ {
		b.StopTimer()
		h := l.Host(fmt.Sprintf("n%d", i), l.Router(fmt.Sprintf("r%d", i), lab.Home))
		a := lab.NewAgent(b, h, srv.Join)
		b.StartTimer()
		start := time.Now()
		lab.Must(b, a.Launch())
		ping, err := firstPing(ctx, h, target, 30*time.Second)
		if err != nil {
			lab.Must(b, a.WaitReady(ctx)) // an agent that never came up says why
			b.Fatalf("iteration %d: %v", i, err)
		}
		pings = append(pings, ping.Sub(start))
		b.StopTimer()
		lab.Must(b, a.WaitReady(ctx))
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
		loads = append(loads, Load1())
		a.Proc.Stop()
		b.StartTimer()
	}
	b.StopTimer()
	pms, dms := report(b, "first-ping", pings), report(b, "direct", directs)
	n := len(pms)
	record(b, Row{Section: secSetup, Figure: fmt.Sprintf("Agent start → first ping answered through the tunnel, median of %d (both behind home routers)", n),
		Unit: "ms", Value: Median(pms), Runs: pms, Ref: "NetBird v0.76.1", RefValue: setupAnchor,
		Aim: "≤ 250 ms", Met: Met(Median(pms) <= 250), Load: loads})
	record(b, Row{Section: secSetup, Figure: fmt.Sprintf("Agent start → first ping, p90 of %d", n),
		Unit: "ms", Value: Quantile(pms, 0.9), Load: loads})
	record(b, Row{Section: secSetup, Figure: fmt.Sprintf("Agent start → direct path in use (status), median of %d", n),
		Unit: "ms", Value: Median(dms), Runs: dms, Aim: "≤ 1000 ms", Met: Met(Median(dms) <= 1000), Load: loads})
	record(b, Row{Section: secSetup, Figure: fmt.Sprintf("Agent start → direct path in use, p90 of %d", n),
		Unit: "ms", Value: Quantile(dms, 0.9), Load: loads})
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

// report logs and reports the median and p90 of ds and returns them in
// milliseconds, in the order measured.
func report(b *testing.B, what string, ds []time.Duration) []float64 {
	ms := make([]float64, len(ds))
	for i, d := range ds {
		ms[i] = float64(d) / float64(time.Millisecond)
	}
	if len(ms) == 0 {
		return ms
	}
	// The same median as the recorded row (for an even count, the mean of
	// the middle two; nearest rank would pick the upper one).
	med, p90 := Median(ms), Quantile(ms, 0.9)
	b.ReportMetric(med, "ms/"+what+"-p50")
	b.ReportMetric(p90, "ms/"+what+"-p90")
	s := slices.Clone(ms)
	slices.Sort(s)
	b.Logf("%s over %d runs: median %.0f ms, p90 %.0f ms, all %.0f", what, len(s), med, p90, s)
	return ms
}
