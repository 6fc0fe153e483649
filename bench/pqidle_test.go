//go:build linux

package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"meshd/internal/lab"
)

// pqRotate is the rotation the post-quantum idle benchmark runs with: a
// quarter of the default 2 minutes, so that a one-minute window sees two
// rotations per peer. The figure is then an upper bound for the default.
const pqRotate = 30 * time.Second

// BenchmarkAgentIdleCPUPostQuantum: the CPU of an idle `meshd agent` with
// 50 peers (netstack agents, as in BenchmarkAgentMemory) in permissive
// post-quantum mode, every key rotating every pqRotate, over a one-minute
// window; then the same agent with the account's mode off, for the
// baseline. Run it once (-benchtime 1x).
//
//	go test ./bench -run '^$' -bench AgentIdleCPUPostQuantum -benchtime 1x -v
func BenchmarkAgentIdleCPUPostQuantum(b *testing.B) {
	ctx := context.Background()
	window := time.Minute
	l := lab.New(b)
	srv := lab.StartServer(ctx, b, l.Host("srv", nil))
	keys := groupWorld(ctx, b, srv, []string{"measured", "peers"}, [][2]string{{"measured", "peers"}})
	if _, err := srv.Admin(ctx, "account", "update", "--post-quantum", "permissive"); err != nil {
		b.Fatal(err)
	}
	rot := []string{"--post-quantum-rotate", pqRotate.String()}
	n := crowdSize()
	hc := l.Host("crowd", nil)
	crowd := make([]*lab.Agent, n)
	for i := range crowd {
		c := lab.NewAgent(b, hc, srv.Join)
		c.State = filepath.Join(l.Dir(), fmt.Sprintf("crowd%d-state", i))
		c.Socket = filepath.Join(filepath.Dir(c.Socket), fmt.Sprintf("crowd%d.sock", i))
		c.Port = 0
		c.Args = append([]string{"--setup-key", keys["peers"], "--wg-mode", "netstack", "--hostname", fmt.Sprintf("crowd-%d", i)}, rot...)
		lab.Must(b, c.Launch())
		crowd[i] = c
	}
	for _, c := range crowd {
		lab.Must(b, c.WaitReady(ctx))
	}
	l.Step(fmt.Sprintf("%d netstack agents up", n))
	a := lab.NewAgent(b, l.Host("a", nil), srv.Join)
	a.Args = append([]string{"--setup-key", keys["measured"]}, rot...)
	lab.Must(b, a.Launch())
	lab.Must(b, a.WaitReady(ctx))
	wctx, cancel := context.WithTimeout(ctx, 4*time.Minute)
	defer cancel()
	_, err := a.WaitStatus(wctx, fmt.Sprintf("%d peers with post-quantum keys", n), func(st *lab.Status) bool {
		k := 0
		for _, p := range st.Peers {
			if p.State == "connected" && p.PostQuantum {
				k++
			}
		}
		return k >= n
	})
	if err != nil {
		b.Fatal(err)
	}
	l.Step(fmt.Sprintf("a connected to %d peers with post-quantum keys", n))
	lab.Pause(ctx, 10*time.Second)
	pq := cpuOver(ctx, b, a.Proc.PID, window)
	l.Step("permissive measured")

	if _, err := srv.Admin(ctx, "account", "update", "--post-quantum", "off"); err != nil {
		b.Fatal(err)
	}
	_, err = a.WaitStatus(wctx, "no post-quantum keys", func(st *lab.Status) bool {
		for _, p := range st.Peers {
			if p.PostQuantum {
				return false
			}
		}
		return true
	})
	if err != nil {
		b.Fatal(err)
	}
	lab.Pause(ctx, 10*time.Second)
	off := cpuOver(ctx, b, a.Proc.PID, window)
	l.Step("off measured")
	b.ReportMetric(pq, "%core-permissive")
	b.ReportMetric(off, "%core-off")
	b.Logf("idle agent with %d peers, over %v: permissive (keys rotating every %v) %.2f%% of one core, off %.2f%%; load %.2f",
		n, window, pqRotate, pq, off, Load1())
}

// cpuOver returns the CPU the process used over d, in percent of one core.
func cpuOver(ctx context.Context, tb testing.TB, pid int, d time.Duration) float64 {
	tb.Helper()
	t0, c0 := time.Now(), cpuTicks(tb, pid)
	lab.Pause(ctx, d)
	t1, c1 := time.Now(), cpuTicks(tb, pid)
	return 100 * float64(c1-c0) / 100 / t1.Sub(t0).Seconds() // USER_HZ is 100 on Linux
}

// cpuTicks is utime + stime of a process, in clock ticks.
func cpuTicks(tb testing.TB, pid int) int64 {
	tb.Helper()
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		tb.Fatal(err)
	}
	// The command name (field 2) may hold spaces: count after its ')'.
	f := strings.Fields(string(raw[strings.LastIndexByte(string(raw), ')')+1:]))
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return ut + st
}
