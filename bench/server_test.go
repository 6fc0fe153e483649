//go:build linux

package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"testing"
	"time"

	"meshd/internal/jointoken"
	"meshd/internal/lab"
)

const (
	secControl = "3. Control plane"
	secMemory  = "5. Memory"
)

// policy and setupKey are the parts of `meshd admin ... --json` used here.
type policy struct {
	ID string `json:"id"`
}

type setupKey struct {
	Key string `json:"key"`
}

// groupWorld replaces the default All → All policy of srv's account with
// one policy per group (each group reaches itself) and returns a setup key
// per group, which puts the peers joining with it in that group.
func groupWorld(ctx context.Context, tb testing.TB, srv *lab.Server, groups []string, policies [][2]string) map[string]string {
	tb.Helper()
	var ps []policy
	lab.Must(tb, srv.AdminJSON(ctx, &ps, "policies", "list"))
	for _, p := range ps {
		if _, err := srv.Admin(ctx, "policies", "delete", p.ID); err != nil {
			tb.Fatal(err)
		}
	}
	keys := map[string]string{}
	for _, g := range groups {
		if _, err := srv.Admin(ctx, "groups", "create", g); err != nil {
			tb.Fatal(err)
		}
		var k setupKey
		if err := srv.AdminJSON(ctx, &k, "setup-keys", "create", "--name", g, "--group", g); err != nil {
			tb.Fatal(err)
		}
		keys[g] = k.Key
	}
	for _, p := range policies {
		if _, err := srv.Admin(ctx, "policies", "create", "--name", p[0]+"-"+p[1],
			"--source", p[0], "--destination", p[1], "--bidirectional"); err != nil {
			tb.Fatal(err)
		}
	}
	return keys
}

var (
	simResultLine = regexp.MustCompile(`(?m)^result (\{.*\})$`)
	simReadyLine  = regexp.MustCompile(`(?m)^ready (\{.*\})$`)
)

// BenchmarkServer (items 3 and 5): `meshd all` on a public host of the
// lab, and in another namespace one process of simulated agents (this test
// binary re-executed, see sim_test.go): N agents (1,000; 200 with
// $MESHD_BENCH_QUICK=1), 100 at a time, each with its own key and its own
// TLS connections, do what an agent does to join: Challenge, Login with a
// setup key, Challenge, Sync until the first map. It reports the joins per
// second and the join latency. Then every agent opens its signal stream
// as well, and it reports the RSS of `meshd all` with N peers connected
// (Sync and signal streams), against its RSS with none.
//
// The account is in groups of 50 peers that reach each other (as in
// internal/control's benchmarks): with the default All → All policy every
// map lists every peer and each join sends N maps of N peers, which
// measures map size, not joins. Run it once (-benchtime 1x).
//
//	go test ./bench -run '^$' -bench '^BenchmarkServer$' -benchtime 1x -v
func BenchmarkServer(b *testing.B) {
	n, conc := 1000, 100
	if quick() {
		n = 200
	}
	ctx := context.Background()
	l := lab.New(b)
	srv := lab.StartServer(ctx, b, l.Host("srv", nil))
	simHost := l.Host("sim", nil)
	var groups []string
	var pols [][2]string
	for g := range (n + 49) / 50 {
		name := fmt.Sprintf("g%d", g)
		groups = append(groups, name)
		pols = append(pols, [2]string{name, name})
	}
	keyOf := groupWorld(ctx, b, srv, groups, pols)
	var keys []string
	for _, g := range groups {
		keys = append(keys, keyOf[g])
	}
	tok, err := jointoken.Decode(srv.Join)
	if err != nil {
		b.Fatal(err)
	}
	l.Step("meshd all up, account ready")
	idle := sampleRSS(b, srv.Proc, 3*time.Second)

	cfg, err := json.Marshal(simConfig{URL: tok.ControlURL, Pin: tok.Pin, Keys: keys, N: n, Concurrency: conc, Signal: true})
	if err != nil {
		b.Fatal(err)
	}
	exe, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	sim, err := simHost.Start("sim-agents", "env", simEnv+"="+string(cfg), exe, "-test.run=^$")
	if err != nil {
		b.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	m, err := sim.WaitOutput(wctx, simResultLine)
	if err != nil {
		b.Fatalf("simulated agents: %v\n%s", err, sim.Output())
	}
	var res simResult
	if err := json.Unmarshal([]byte(m[1]), &res); err != nil {
		b.Fatal(err)
	}
	joinLoad := Load1()
	l.Step(fmt.Sprintf("%d agents joined", n))
	m, err = sim.WaitOutput(wctx, simReadyLine)
	if err != nil {
		b.Fatalf("simulated agents: %v\n%s", err, sim.Output())
	}
	var ready simReady
	if err := json.Unmarshal([]byte(m[1]), &ready); err != nil {
		b.Fatal(err)
	}
	l.Step(fmt.Sprintf("%d signal streams", n))
	b.StopTimer()
	settle := 10 * time.Second
	if quick() {
		settle = 3 * time.Second
	}
	full := sampleRSS(b, srv.Proc, settle)
	if exited, _ := sim.Exited(); exited {
		b.Fatalf("the simulated agents exited:\n%s", sim.Output())
	}
	b.ReportMetric(res.JoinsPerSecond, "joins/s")
	b.ReportMetric(full, "server-rss-MB")

	record(b, Row{Section: secControl, Figure: fmt.Sprintf("Agents joining at once: %d agents, %d at a time (Challenge, Login, Challenge, Sync to the first map; TLS)", n, conc),
		Unit: "joins/s", Value: res.JoinsPerSecond, Load: []float64{joinLoad},
		Note: fmt.Sprintf("%d joins in %.1f s; join latency p50 %.0f ms, p90 %.0f ms, max %.0f ms; groups of 50; simulated agents in one process on the same 2 cores",
			n, res.Seconds, res.P50ms, res.P90ms, res.MaxMS)})
	record(b, Row{Section: secMemory, Figure: fmt.Sprintf("`meshd all` RSS with %d peers connected (Sync + signal streams)", n),
		Unit: "MB", Value: full, Ref: "`meshd all` with no peer", RefValue: idle, RefMeasured: true, Load: []float64{Load1()},
		Note: fmt.Sprintf("%.0f KB per connected peer; signal streams up in %.1f s", (full-idle)*1024/float64(n), ready.Seconds)})
}

// sampleRSS watches p's RSS for d (every 500 ms) and returns the last, in MB.
func sampleRSS(tb testing.TB, p *lab.Proc, d time.Duration) float64 {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	for lab.Pause(ctx, 500*time.Millisecond) {
		rssMB(tb, p) // a process that exits is logged at once
	}
	return rssMB(tb, p)
}
