//go:build linux

package bench

import (
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"meshd/internal/lab"
)

// NetBird's client daemon in the same kind of lab on this machine: ~54 MB
// idle, 134–442 MB after an iperf3 run (reference figures for the report).
const (
	netbirdIdleMB  = 54.0
	netbirdAfterMB = 134.0
	aimIdleMB      = 30.0
	aimAfterMB     = 60.0
)

// crowdEnv sets how many netstack agents the measured agent has as extra
// peers in the second phase (default 50; 0 skips that phase).
const crowdEnv = "MESHD_BENCH_CROWD"

func crowdSize() int {
	if n, err := strconv.Atoi(os.Getenv(crowdEnv)); err == nil && n >= 0 {
		return n
	}
	return 50
}

// quietWait is how long after an iperf3 run ends the "after" figures are
// read: the agent's memory trimmer (--mem-trim, 2 s without traffic,
// polled every second) has given the run's buffers back by then.
const quietWait = 5 * time.Second

// BenchmarkAgentMemory: the RSS of `meshd agent`, idle
// and after a 10 s iperf3 run through its tunnel, with 1 peer and with 51.
// Policies: group "measured" ↔ group "peers" only, so measured agents see
// every peer and peers see only measured agents.
//
//   - 1 peer: agents a (measured) and b (peer) on public hosts, direct
//     path. Plain wireguard-go between two more public hosts is the
//     reference: its RSS idle and after the same iperf3 run through it.
//   - 51 peers: 50 more agents ($MESHD_BENCH_CROWD), real `meshd agent`
//     processes in netstack mode (no TUN; the same engine, ICE, signal and
//     WireGuard device on a gVisor stack) on one public host, each with its
//     own key, state and UDP port, then a fresh measured agent a50. It
//     waits until a50 lists b and the 50 as connected on a direct path
//     (live ICE sessions and WireGuard handshakes), then measures as above
//     with a50 → b.
//
// "Idle" is after the peers connected and a settle time (10 s; 3 s
// quick); with 51 peers also after a50's relay sessions closed (at most
// relayLingerWait more; the note counts them). "After" is quietWait after iperf3 ends; "at the end" is right
// when it ends (the peak: what wireguard-go's pools hold at full speed).
// Every figure's note splits the RSS into anonymous memory (the process's
// own) and file pages (the binary's text and read-only data, shared with
// every process that maps it and reclaimable at any time; the kernel maps
// 64 KiB around each page touched). Run it once (-benchtime 1x).
//
//	go test ./bench -run '^$' -bench AgentMemory -benchtime 1x -v
func BenchmarkAgentMemory(b *testing.B) {
	ctx := context.Background()
	settle := 10 * time.Second
	if quick() {
		settle = 3 * time.Second
	}
	secs := iperfSeconds()
	l := lab.New(b)
	srv := lab.StartServer(ctx, b, l.Host("srv", nil))
	keys := groupWorld(ctx, b, srv, []string{"measured", "peers"}, [][2]string{{"measured", "peers"}})
	ha, hb := l.Host("a", nil), l.Host("b", nil)
	a := lab.NewAgent(b, ha, srv.Join)
	sockA, sockB, sock50 := pprofSock(b, l, "a"), pprofSock(b, l, "b"), pprofSock(b, l, "a50")
	a.Args = []string{"--setup-key", keys["measured"], "--pprof-listen", sockA}
	pb := lab.NewAgent(b, hb, srv.Join)
	pb.Args = []string{"--setup-key", keys["peers"], "--pprof-listen", sockB}
	for _, x := range []*lab.Agent{a, pb} {
		lab.Must(b, x.Launch())
	}
	for _, x := range []*lab.Agent{a, pb} {
		lab.Must(b, x.WaitReady(ctx))
	}
	waitPath(ctx, b, a, pb, "direct", 30*time.Second)
	mtu, err := linkMTU(ctx, ha, a.Iface)
	if err != nil {
		b.Fatal(err)
	}
	hwa, hwb := l.Host("wga", nil), l.Host("wgb", nil)
	wg := startWGPair(ctx, b, hwa, hwb, mtu)
	l.Step("1 peer: agents and wireguard-go up")

	// 1 peer.
	lab.Pause(ctx, settle)
	load := Load1()
	idleA, idleB := memOf(b, a.Proc), memOf(b, pb.Proc)
	idleWA, idleWB := memOf(b, wg.A), memOf(b, wg.B)
	heapIdleA := heapOf(ctx, b, sockA)
	saveHeapProfile(ctx, b, sockA, "memory-1peer-idle")
	savePprof(ctx, b, sockA, "/debug/pprof/goroutine?debug=1", "memory-1peer-idle-goroutines.txt")
	savePprof(ctx, b, sockA, "/debug/pprof/heap?debug=1", "memory-1peer-idle-heap-debug.txt")
	run, err := tcp(ctx, ha, hb, pb.OverlayIP(), secs)
	if err != nil {
		b.Fatal(err)
	}
	endA, endB := memOf(b, a.Proc), memOf(b, pb.Proc)
	heapEndA, heapEndB := heapOf(ctx, b, sockA), heapOf(ctx, b, sockB)
	saveHeapProfile(ctx, b, sockA, "memory-1peer-sender")
	saveHeapProfile(ctx, b, sockB, "memory-1peer-receiver")
	lab.Pause(ctx, quietWait)
	loadAfter := Load1()
	afterA, afterB := memOf(b, a.Proc), memOf(b, pb.Proc)
	heapAfterA, heapAfterB := heapOf(ctx, b, sockA), heapOf(ctx, b, sockB)
	wgRun, err := tcp(ctx, hwa, hwb, wg.AddrB, secs)
	if err != nil {
		b.Fatal(err)
	}
	endWA, endWB := memOf(b, wg.A), memOf(b, wg.B)
	lab.Pause(ctx, quietWait)
	afterWA, afterWB := memOf(b, wg.A), memOf(b, wg.B)
	l.Step("1 peer measured")

	it := fmt.Sprintf("a %d s iperf3 run", secs)
	after := fmt.Sprintf("%.0f s after %s", quietWait.Seconds(), it)
	runs := fmt.Sprintf("iperf3: meshd %.2f Gb/s, wireguard-go %.2f Gb/s", run.Gbps, wgRun.Gbps)
	record(b, Row{Section: secMemory, Figure: "Agent RSS idle, 1 peer", Unit: "MB", Value: idleA.RSS,
		Ref: "wireguard-go", RefValue: idleWA.RSS, RefMeasured: true, Aim: "< 30 MB", Met: Met(idleA.RSS < aimIdleMB),
		Load: []float64{load}, Note: fmt.Sprintf("%s; %s; wireguard-go %s; the peer's agent: %s; NetBird: ~%.0f MB (anchor)",
			idleA, heapIdleA, idleWA, idleB, netbirdIdleMB)})
	record(b, Row{Section: secMemory, Figure: "Agent RSS " + after + ", 1 peer, sender", Unit: "MB", Value: afterA.RSS,
		Ref: "wireguard-go", RefValue: afterWA.RSS, RefMeasured: true, Aim: "< 60 MB", Met: Met(afterA.RSS < aimAfterMB),
		Load: []float64{loadAfter}, Note: fmt.Sprintf("%s; %s; wireguard-go %s; %s; NetBird: %.0f–442 MB, never given back (anchor)",
			afterA, heapAfterA, afterWA, runs, netbirdAfterMB)})
	record(b, Row{Section: secMemory, Figure: "Agent RSS " + after + ", 1 peer, receiver", Unit: "MB", Value: afterB.RSS,
		Ref: "wireguard-go", RefValue: afterWB.RSS, RefMeasured: true, Aim: "< 60 MB", Met: Met(afterB.RSS < aimAfterMB),
		Load: []float64{loadAfter}, Note: fmt.Sprintf("%s; %s; wireguard-go %s; idle before: meshd %s, wireguard-go %s", afterB, heapAfterB, afterWB, idleB, idleWB)})
	record(b, Row{Section: secMemory, Figure: "Agent RSS at the end of " + it + " (peak), 1 peer, sender", Unit: "MB", Value: endA.RSS,
		Ref: "wireguard-go", RefValue: endWA.RSS, RefMeasured: true, Load: []float64{load},
		Note: fmt.Sprintf("%s; %s; wireguard-go %s", endA, heapEndA, endWA)})
	record(b, Row{Section: secMemory, Figure: "Agent RSS at the end of " + it + " (peak), 1 peer, receiver", Unit: "MB", Value: endB.RSS,
		Ref: "wireguard-go", RefValue: endWB.RSS, RefMeasured: true, Load: []float64{load},
		Note: fmt.Sprintf("%s; %s; wireguard-go %s", endB, heapEndB, endWB)})

	n := crowdSize()
	if n == 0 {
		return
	}
	// 1 + n peers.
	hc := l.Host("crowd", nil)
	crowd := make([]*lab.Agent, n)
	for i := range crowd {
		c := lab.NewAgent(b, hc, srv.Join)
		c.State = filepath.Join(l.Dir(), fmt.Sprintf("crowd%d-state", i))
		c.Socket = filepath.Join(filepath.Dir(c.Socket), fmt.Sprintf("crowd%d.sock", i))
		c.Port = 0
		c.Args = []string{"--setup-key", keys["peers"], "--wg-mode", "netstack", "--hostname", fmt.Sprintf("crowd-%d", i)}
		lab.Must(b, c.Launch())
		crowd[i] = c
	}
	for _, c := range crowd {
		lab.Must(b, c.WaitReady(ctx))
	}
	l.Step(fmt.Sprintf("%d netstack agents up", n))
	h50 := l.Host("a50", nil)
	a50 := lab.NewAgent(b, h50, srv.Join)
	a50.Args = []string{"--setup-key", keys["measured"], "--pprof-listen", sock50}
	lab.Must(b, a50.Launch())
	lab.Must(b, a50.WaitReady(ctx))
	wctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	_, err = a50.WaitStatus(wctx, fmt.Sprintf("%d peers connected directly", n+1), func(st *lab.Status) bool {
		k := 0
		for _, p := range st.Peers {
			if p.State == "connected" && p.Path == "direct" {
				k++
			}
		}
		return k >= n+1
	})
	if err != nil {
		b.Fatal(err)
	}
	l.Step(fmt.Sprintf("a50 connected to %d peers", n+1))
	lab.Pause(ctx, settle)
	// Peers whose direct path took longer than the relay delay also have a
	// relay session (an ICE agent and a TURN allocation), which lingers
	// for a while after the direct path is up (path.DefaultRelayLinger).
	// "Idle" is the agent once they are gone: its steady state.
	early := memOf(b, a50.Proc)
	earlyTURN, err := turnClients(ctx, sock50)
	if err != nil {
		b.Logf("bench: %v", err)
	}
	turnLeft := earlyTURN
	for deadline := time.Now().Add(relayLingerWait); turnLeft > 0 && time.Now().Before(deadline); {
		lab.Pause(ctx, 5*time.Second)
		if turnLeft, err = turnClients(ctx, sock50); err != nil {
			b.Logf("bench: %v", err)
			break
		}
		b.Logf("a50: %d TURN clients, %s", turnLeft, memOf(b, a50.Proc))
	}
	if turnLeft < earlyTURN {
		lab.Pause(ctx, quietWait)
	}
	l.Step(fmt.Sprintf("a50 relay sessions: %d, then %d", earlyTURN, turnLeft))
	load50 := Load1()
	idle50 := memOf(b, a50.Proc)
	heapIdle50 := heapOf(ctx, b, sock50)
	saveHeapProfile(ctx, b, sock50, "memory-51peers-idle")
	savePprof(ctx, b, sock50, "/debug/pprof/goroutine?debug=1", "memory-51peers-idle-goroutines.txt")
	savePprof(ctx, b, sock50, "/debug/pprof/heap?debug=1", "memory-51peers-idle-heap-debug.txt")
	var crowdRSS []float64
	for _, c := range crowd {
		crowdRSS = append(crowdRSS, memOf(b, c.Proc).RSS)
	}
	if _, err := tcp(ctx, h50, hb, pb.OverlayIP(), secs); err != nil {
		b.Fatal(err)
	}
	end50 := memOf(b, a50.Proc)
	heapEnd50 := heapOf(ctx, b, sock50)
	lab.Pause(ctx, quietWait)
	loadAfter50 := Load1()
	after50 := memOf(b, a50.Proc)
	heapAfter50 := heapOf(ctx, b, sock50)
	l.Step(fmt.Sprintf("%d peers measured", n+1))

	record(b, Row{Section: secMemory, Figure: fmt.Sprintf("Agent RSS idle, %d peers (%d netstack agents + 1)", n+1, n), Unit: "MB", Value: idle50.RSS,
		Ref: "NetBird", RefValue: netbirdIdleMB, Aim: "< 30 MB", Met: Met(idle50.RSS < aimIdleMB), Load: []float64{load50},
		Note: fmt.Sprintf("%s; %s; relay sessions (TURN clients): %d, %s before they closed (%d left); each netstack agent (1 peer): median %.1f MB, max %.1f MB",
			idle50, heapIdle50, earlyTURN, early, turnLeft, Median(crowdRSS), Quantile(crowdRSS, 1))})
	record(b, Row{Section: secMemory, Figure: fmt.Sprintf("Agent RSS %s, %d peers, sender", after, n+1), Unit: "MB", Value: after50.RSS,
		Ref: "NetBird", RefValue: netbirdAfterMB, Aim: "< 60 MB", Met: Met(after50.RSS < aimAfterMB), Load: []float64{loadAfter50},
		Note: fmt.Sprintf("%s; %s", after50, heapAfter50)})
	record(b, Row{Section: secMemory, Figure: fmt.Sprintf("Agent RSS at the end of %s (peak), %d peers, sender", it, n+1), Unit: "MB", Value: end50.RSS,
		Load: []float64{load50}, Note: fmt.Sprintf("%s; %s", end50, heapEnd50)})
}

// mem is a process's resident memory in MB: all of it, and the anonymous
// and file-backed parts.
type mem struct{ RSS, Anon, File float64 }

func (m mem) String() string {
	return fmt.Sprintf("RSS %.1f MB = anon %.1f + file %.1f", m.RSS, m.Anon, m.File)
}

// memOf reads p's VmRSS, RssAnon and RssFile (NaN when it cannot).
func memOf(tb testing.TB, p *lab.Proc) mem {
	tb.Helper()
	m := mem{math.NaN(), math.NaN(), math.NaN()}
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.PID))
	if err != nil {
		tb.Logf("bench: memory of %s: %v", p.Name, err)
		return m
	}
	for _, line := range strings.Split(string(raw), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		var kb float64
		if _, err := fmt.Sscanf(strings.TrimSpace(v), "%f kB", &kb); err != nil {
			continue
		}
		switch k {
		case "VmRSS":
			m.RSS = kb / 1024
		case "RssAnon":
			m.Anon = kb / 1024
		case "RssFile":
			m.File = kb / 1024
		}
	}
	return m
}

// heapOf is the agent's Go memory figures as text for a note ("" when
// they cannot be read: the RSS stands alone then).
func heapOf(ctx context.Context, tb testing.TB, sock string) string {
	tb.Helper()
	h, err := readHeapStats(ctx, sock)
	if err != nil {
		tb.Logf("bench: %v", err)
		return "Go heap: unknown"
	}
	return h.String()
}

// relayLingerWait bounds the wait for an agent's relay sessions to close
// after its direct paths came up and the settle time passed
// (path.DefaultRelayLinger is 30 s; before d028ea5 most stayed open until
// a rekey): the note says how many remain.
const relayLingerWait = 45 * time.Second

// turnClients counts the agent's pion/turn clients (one per relay session)
// in its goroutine profile.
func turnClients(ctx context.Context, sock string) (int, error) {
	raw, err := pprofGet(ctx, sock, "/debug/pprof/goroutine?debug=1")
	if err != nil {
		return 0, err
	}
	n := 0
	for _, block := range strings.Split(string(raw), "\n\n") {
		var k int
		if _, err := fmt.Sscanf(block, "%d @", &k); err == nil && strings.Contains(block, "pion/turn/v3.(*Client).Listen.func1") {
			n += k
		}
	}
	return n, nil
}

// savePprof writes what the agent's pprof server answers for path to
// $MESHD_BENCH_PROFILE/name (nothing when the variable is unset): goroutine
// counts by stack and the runtime's MemStats, for the notes.
func savePprof(ctx context.Context, tb testing.TB, sock, path, name string) {
	tb.Helper()
	dir := os.Getenv(profileEnv)
	if dir == "" {
		return
	}
	raw, err := pprofGet(ctx, sock, path)
	if err == nil {
		err = os.MkdirAll(dir, 0o755)
	}
	if err == nil {
		err = os.WriteFile(filepath.Join(dir, name), raw, 0o644)
	}
	if err != nil {
		tb.Logf("bench: %s: %v", name, err)
	}
}
