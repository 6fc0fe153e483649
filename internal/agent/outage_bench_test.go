package agent

import (
	"os"
	"runtime"
	"strconv"
	"testing"
	"time"
)

// BenchmarkOutageMemory measures the live heap of a process running two
// connected agents while control and signal are unreachable (memory
// must stay flat). It reports the live heap after the first and the
// last of MESHD_OUTAGE_SECONDS (default 60) seconds of outage, after a GC.
// Run with -benchtime=1x.
func BenchmarkOutageMemory(b *testing.B) {
	secs := 60
	if v, err := strconv.Atoi(os.Getenv("MESHD_OUTAGE_SECONDS")); err == nil && v > 0 {
		secs = v
	}
	for i := 0; i < b.N; i++ {
		w := newWorld(b)
		a, c := w.agent("outa"), w.agent("outc")
		da, _ := waitUp(b, a)
		_, ipc := waitUp(b, c)
		waitPing(b, da, ipc, 15*time.Second)
		// Control and signal go away.
		w.control.Server.CloseClientConnections()
		w.control.Server.Close()
		w.signal.HTTP.CloseClientConnections()
		w.signal.HTTP.Close()
		live := func() uint64 {
			runtime.GC()
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			return ms.HeapAlloc
		}
		time.Sleep(5 * time.Second) // settle: streams notice the outage
		first := live()
		var samples []uint64
		for s := 0; s < secs; s += 10 {
			time.Sleep(10 * time.Second)
			samples = append(samples, live())
		}
		last := samples[len(samples)-1]
		if err := ping(da, ipc, 2*time.Second); err != nil {
			b.Fatalf("tunnel broke during the outage: %v", err)
		}
		b.Logf("live heap during a %ds outage (KiB): start %d, every 10s %v", secs, first>>10, kib(samples))
		b.ReportMetric(float64(first>>10), "KiB-start")
		b.ReportMetric(float64(last>>10), "KiB-end")
		b.ReportMetric(float64(runtime.NumGoroutine()), "goroutines")
	}
}

func kib(v []uint64) []uint64 {
	out := make([]uint64, len(v))
	for i, x := range v {
		out[i] = x >> 10
	}
	return out
}
