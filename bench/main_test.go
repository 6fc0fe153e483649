//go:build linux

package bench

import (
	"os"
	"testing"

	"meshd/internal/lab"
)

// TestMain runs the lab benchmarks under lab.Main (cleanup on interrupt,
// stale namespaces swept, goroutine leak check); with $MESHD_BENCH_SIM set
// the binary is instead a process of simulated agents (sim_test.go).
func TestMain(m *testing.M) {
	if cfg := os.Getenv(simEnv); cfg != "" {
		os.Exit(runSim(cfg))
	}
	lab.Main(m)
}
