package cluster_test

import (
	"testing"

	"meshd/internal/cluster"
	"meshd/internal/cluster/clustertest"
)

func TestGroupConformance(t *testing.T) {
	clustertest.Run(t, func(t *testing.T) clustertest.Pair {
		g := cluster.NewGroup(nil)
		a, b := g.Join(), g.Join()
		t.Cleanup(func() { a.Close(); b.Close() })
		return clustertest.Pair{A: a, B: b}
	})
}
