package agent

import (
	"net/netip"
	"testing"
	"time"

	"meshd/internal/testutil"
)

// firstPing starts a new agent next to a running one and returns how long
// it took from the agent's start to the first answered ping through the
// tunnel. It measures; it does not judge.
func firstPing(tb testing.TB, w *world, peer netip.Addr, name string) time.Duration {
	tb.Helper()
	start := time.Now()
	e := w.agent(name)
	var dev interface{}
	testutil.WaitFor(tb, 15*time.Second, "device", func() bool { d := e.Device(); dev = d; return d != nil })
	_ = dev
	answered := waitPing(tb, e.Device(), peer, 15*time.Second)
	return answered.Sub(start)
}

func TestFirstPingAfterAgentStart(t *testing.T) {
	w := newWorld(t)
	b := w.agent("fpb")
	_, ipb := waitUp(t, b)
	d := firstPing(t, w, ipb, "fpa")
	t.Logf("agent start -> first ping answered: %v", d.Round(time.Millisecond))
}

// BenchmarkFirstPing reports agent start → first ping (ms/op is the figure;
// run with -benchtime=5x).
func BenchmarkFirstPing(b *testing.B) {
	w := newWorld(b)
	peer := w.agent("fpb")
	_, ip := waitUp(b, peer)
	var total time.Duration
	for i := 0; i < b.N; i++ {
		total += firstPing(b, w, ip, "fpa"+string(rune('a'+i%26)))
	}
	b.ReportMetric(float64(total.Milliseconds())/float64(b.N), "ms/first-ping")
}
