package relay_test

import (
	"fmt"
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
