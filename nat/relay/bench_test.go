package relay_test

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"meshd/nat/relay"
	"meshd/nat/relay/relaytest"
)

// BenchmarkRelay measures relayed throughput through an in-process relay
// on loopback: one op is one 1280-byte payload (a WireGuard-sized packet)
// relayed from one client through two relay sockets to another, as
// ChannelData both ends. cpu-s/GB is the CPU time of the whole test
// process (relay and clients) per GB of payload; bench/relay measures the
// relay process alone.
func BenchmarkRelay(b *testing.B) {
	for _, pairs := range []int{1, 10} {
		b.Run(fmt.Sprintf("pairs=%d", pairs), func(b *testing.B) {
			s := startRelay(b, func(o *relay.Options) { o.Log = zap.NewNop() })
			ps := make([]*relaytest.Pair, pairs)
			for i := range ps {
				p, err := relaytest.NewPair(s.UDPAddr(), testSecret, fmt.Sprintf("bench%d", i))
				if err != nil {
					b.Fatal(err)
				}
				b.Cleanup(p.Close)
				ps[i] = p
			}
			const size = 1280
			b.SetBytes(size)
			b.ReportAllocs()
			cpu0 := cpuTime(b)
			b.ResetTimer()
			res, err := relaytest.Load(ps, size, max(b.N/pairs, 1), time.Minute)
			b.StopTimer()
			if err != nil {
				b.Fatal(err)
			}
			cpu := cpuTime(b) - cpu0
			b.ReportMetric(res.Mbps(), "Mb/s")
			b.ReportMetric(res.Mbps()/float64(pairs), "Mb/s/pair")
			b.ReportMetric(100*res.Loss(), "%loss")
			if res.Bytes() > 0 {
				b.ReportMetric(cpu.Seconds()/(float64(res.Bytes())/1e9), "cpu-s/GB")
			}
		})
	}
}

func cpuTime(tb testing.TB) time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		tb.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkRelayPionClient relays one pair through pion/turn's client,
// the one the agent's pion/ice uses (one packet per system call, a
// goroutine hop per received packet), to show what an agent gets rather
// than what the relay can carry.
func BenchmarkRelayPionClient(b *testing.B) {
	s := startRelay(b, func(o *relay.Options) { o.Log = zap.NewNop() })
	x := mustAllocate(b, s.UDPAddr().String(), relaytest.UDP, cred("pion-a"), nil)
	y := mustAllocate(b, s.UDPAddr().String(), relaytest.UDP, cred("pion-b"), nil)
	relaytest.Exchange(b, x, y, 10, 1280) // permissions and channels
	const size, window = 1280, 256
	var got atomic.Int64
	progress := make(chan struct{}, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 2048)
		for got.Load() < int64(b.N) {
			_ = y.Relay.SetReadDeadline(time.Now().Add(time.Second))
			n, _, err := y.Relay.ReadFrom(buf)
			if err != nil {
				return // lost packets: the sender's stall ends the run
			}
			if n == size {
				got.Add(1)
				select {
				case progress <- struct{}{}:
				default:
				}
			}
		}
	}()
	b.SetBytes(size)
	pkt := make([]byte, size)
	cpu0 := cpuTime(b)
	start := time.Now()
	b.ResetTimer()
	lost := int64(0)
	for i := 0; i < b.N; i++ {
		for int64(i)-lost-got.Load() >= window {
			select {
			case <-progress:
			case <-time.After(100 * time.Millisecond):
				lost = int64(i) - got.Load() // dropped on the way
			}
		}
		if _, err := x.Relay.WriteTo(pkt, y.RelayAddr()); err != nil {
			b.Fatal(err)
		}
	}
	<-done
	b.StopTimer()
	elapsed, cpu := time.Since(start), cpuTime(b)-cpu0
	bytes := float64(got.Load()) * size
	b.ReportMetric(bytes*8/elapsed.Seconds()/1e6, "Mb/s")
	b.ReportMetric(100*(1-float64(got.Load())/float64(b.N)), "%loss")
	b.ReportMetric(cpu.Seconds()/(bytes/1e9), "cpu-s/GB")
}
