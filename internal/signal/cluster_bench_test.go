package signal_test

import (
	"fmt"
	"testing"

	"meshd/internal/cluster"
	"meshd/internal/signal/signaltest"
)

// BenchmarkCrossInstance measures signal messages a second between two
// signal instances in one process over cluster.NewGroup (the bus is
// in-memory: the figure is signal's cost, not a database's), and the same
// load with both peers of each pair on one instance for comparison. The same
// benchmark runs over any cluster through signaltest.BenchCrossInstance.
//
//	go test ./internal/signal -run '^$' -bench CrossInstance -benchtime 200000x
func BenchmarkCrossInstance(b *testing.B) {
	for _, across := range []bool{true, false} {
		where := "across"
		if !across {
			where = "one-instance"
		}
		for _, pairs := range []int{1, 64} {
			b.Run(fmt.Sprintf("%s/pairs=%d", where, pairs), func(b *testing.B) {
				signaltest.BenchCrossInstance(b, signaltest.GroupClusters(cluster.NewGroup(nil)), across, pairs, 64, 150)
			})
		}
	}
}
