//go:build linux

package bench

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"meshd/internal/lab"
)

// NetBird's client daemon in the same kind of lab on this machine (issue
// 8): ~54 MB idle, 134–442 MB after an iperf3 run.
const (
	netbirdIdleMB  = 54.0
	netbirdAfterMB = 134.0
	aimIdleMB      = 30.0
	aimAfterMB     = 60.0
)

// crowdSize is how many extra peers the measured agent has in the
// 50-peer case.
const crowdSize = 50

// BenchmarkAgentMemory (issue 8, item 5): the RSS of `meshd agent`, idle
// and after a 10 s iperf3 run through its tunnel, with 1 peer and with 51.
// Policies: group "measured" ↔ group "peers" only, so measured agents see
// every peer and peers see only measured agents.
//
//   - 1 peer: agents a (measured) and b (peer) on public hosts, direct
//     path. Plain wireguard-go between two more public hosts is the
//     reference: its RSS idle and after the same iperf3 run through it.
//   - 51 peers: 50 more agents, real `meshd agent` processes in netstack
//     mode (no TUN; the same engine, ICE, signal and WireGuard device on a
//     gVisor stack) on one public host, each with its own key, state and
//     UDP port, then a fresh measured agent a50. It waits until a50 lists
//     b and the 50 as connected on a direct path (live ICE sessions and
//     WireGuard handshakes), then measures as above with a50 → b.
//
// "Idle" is after the peers connected and a settle time (10 s; 3 s
// quick); "after" is right after iperf3 ends and again after the settle
// time. Run it once (-benchtime 1x).
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
		lab.SkipIfNotBuilt(b, x.Launch())
	}
	for _, x := range []*lab.Agent{a, pb} {
		lab.SkipIfNotBuilt(b, x.WaitReady(ctx))
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
	sleepCtx(ctx, settle)
	load := Load1()
	idleA, idleB := rssMB(b, a.Proc), rssMB(b, pb.Proc)
	idleWA, idleWB := rssMB(b, wg.A), rssMB(b, wg.B)
	heapIdleA := heapOf(ctx, b, sockA)
	if _, err := tcp(ctx, ha, hb, pb.OverlayIP(), secs); err != nil {
		b.Fatal(err)
	}
	afterA, afterB := rssMB(b, a.Proc), rssMB(b, pb.Proc)
	heapA, heapB := heapOf(ctx, b, sockA), heapOf(ctx, b, sockB)
	saveHeapProfile(ctx, b, sockA, "memory-1peer-sender")
	saveHeapProfile(ctx, b, sockB, "memory-1peer-receiver")
	if _, err := tcp(ctx, hwa, hwb, wg.AddrB, secs); err != nil {
		b.Fatal(err)
	}
	afterWA, afterWB := rssMB(b, wg.A), rssMB(b, wg.B)
	sleepCtx(ctx, settle)
	laterA, laterB, laterWA := rssMB(b, a.Proc), rssMB(b, pb.Proc), rssMB(b, wg.A)
	gcA := afterGC(ctx, b, a.Proc, sockA, settle)
	l.Step("1 peer measured")

	// 51 peers.
	hc := l.Host("crowd", nil)
	crowd := make([]*lab.Agent, crowdSize)
	for i := range crowd {
		c := lab.NewAgent(b, hc, srv.Join)
		c.State = filepath.Join(l.Dir(), fmt.Sprintf("crowd%d-state", i))
		c.Socket = filepath.Join(filepath.Dir(c.Socket), fmt.Sprintf("crowd%d.sock", i))
		c.Port = 0
		c.Args = []string{"--setup-key", keys["peers"], "--wg-mode", "netstack", "--hostname", fmt.Sprintf("crowd-%d", i)}
		lab.SkipIfNotBuilt(b, c.Launch())
		crowd[i] = c
	}
	for _, c := range crowd {
		lab.SkipIfNotBuilt(b, c.WaitReady(ctx))
	}
	l.Step(fmt.Sprintf("%d netstack agents up", crowdSize))
	h50 := l.Host("a50", nil)
	a50 := lab.NewAgent(b, h50, srv.Join)
	a50.Args = []string{"--setup-key", keys["measured"], "--pprof-listen", sock50}
	lab.SkipIfNotBuilt(b, a50.Launch())
	lab.SkipIfNotBuilt(b, a50.WaitReady(ctx))
	wctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	_, err = a50.WaitStatus(wctx, fmt.Sprintf("%d peers connected directly", crowdSize+1), func(st *lab.Status) bool {
		n := 0
		for _, p := range st.Peers {
			if p.State == "connected" && p.Path == "direct" {
				n++
			}
		}
		return n >= crowdSize+1
	})
	if err != nil {
		b.Fatal(err)
	}
	l.Step(fmt.Sprintf("a50 connected to %d peers", crowdSize+1))
	sleepCtx(ctx, settle)
	load50 := Load1()
	idle50 := rssMB(b, a50.Proc)
	heapIdle50 := heapOf(ctx, b, sock50)
	saveHeapProfile(ctx, b, sock50, "memory-51peers-idle")
	var crowdRSS []float64
	for _, c := range crowd {
		crowdRSS = append(crowdRSS, rssMB(b, c.Proc))
	}
	if _, err := tcp(ctx, h50, hb, pb.OverlayIP(), secs); err != nil {
		b.Fatal(err)
	}
	after50 := rssMB(b, a50.Proc)
	heap50 := heapOf(ctx, b, sock50)
	sleepCtx(ctx, settle)
	later50 := rssMB(b, a50.Proc)
	gc50 := afterGC(ctx, b, a50.Proc, sock50, settle)
	l.Step("51 peers measured")

	it := fmt.Sprintf("after a %d s iperf3 run", secs)
	later := fmt.Sprintf("%.0f s later: ", settle.Seconds())
	record(b, Row{Section: secMemory, Figure: "Agent RSS idle, 1 peer", Unit: "MB", Value: idleA,
		Ref: "wireguard-go", RefValue: idleWA, RefMeasured: true, Aim: "< 30 MB", Met: Met(idleA < aimIdleMB),
		Load: []float64{load}, Note: fmt.Sprintf("%s; the peer's agent: %.1f MB; NetBird: ~%.0f MB (anchor)", heapIdleA, idleB, netbirdIdleMB)})
	record(b, Row{Section: secMemory, Figure: "Agent RSS " + it + ", 1 peer, sender", Unit: "MB", Value: afterA,
		Ref: "wireguard-go", RefValue: afterWA, RefMeasured: true, Aim: "< 60 MB", Met: Met(afterA < aimAfterMB),
		Load: []float64{Load1()}, Note: fmt.Sprintf("%s; %smeshd %.1f MB, wireguard-go %.1f MB; %s; NetBird: %.0f–442 MB (anchor)", heapA, later, laterA, laterWA, gcA, netbirdAfterMB)})
	record(b, Row{Section: secMemory, Figure: "Agent RSS " + it + ", 1 peer, receiver", Unit: "MB", Value: afterB,
		Ref: "wireguard-go", RefValue: afterWB, RefMeasured: true, Aim: "< 60 MB", Met: Met(afterB < aimAfterMB),
		Load: []float64{Load1()}, Note: fmt.Sprintf("%s; %s%.1f MB; idle before: meshd %.1f MB, wireguard-go %.1f MB", heapB, later, laterB, idleB, idleWB)})
	record(b, Row{Section: secMemory, Figure: fmt.Sprintf("Agent RSS idle, %d peers (%d netstack agents + 1)", crowdSize+1, crowdSize), Unit: "MB", Value: idle50,
		Ref: "NetBird", RefValue: netbirdIdleMB, Aim: "< 30 MB", Met: Met(idle50 < aimIdleMB), Load: []float64{load50},
		Note: fmt.Sprintf("%s; each netstack agent (1 peer): median %.1f MB, max %.1f MB", heapIdle50, Median(crowdRSS), Quantile(crowdRSS, 1))})
	record(b, Row{Section: secMemory, Figure: fmt.Sprintf("Agent RSS %s, %d peers, sender", it, crowdSize+1), Unit: "MB", Value: after50,
		Ref: "NetBird", RefValue: netbirdAfterMB, Aim: "< 60 MB", Met: Met(after50 < aimAfterMB), Load: []float64{Load1()},
		Note: fmt.Sprintf("%s; %s%.1f MB; %s", heap50, later, later50, gc50)})
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

// afterGC makes the agent collect garbage twice (the heap profile's gc=1;
// twice, because sync.Pool keeps its items for one more cycle), waits
// settle for the runtime to return free memory, and says what is left.
// It is the last thing measured in a phase: it changes the process.
func afterGC(ctx context.Context, tb testing.TB, p *lab.Proc, sock string, settle time.Duration) string {
	tb.Helper()
	for range 2 {
		if _, err := pprofGet(ctx, sock, "/debug/pprof/heap?gc=1&debug=1"); err != nil {
			tb.Logf("bench: %v", err)
			return "forced GC: failed"
		}
	}
	h, err := readHeapStats(ctx, sock)
	if err != nil {
		tb.Logf("bench: %v", err)
		return "forced GC: failed"
	}
	sleepCtx(ctx, settle)
	return fmt.Sprintf("after two forced GCs: Go heap in use %.1f MB, RSS %.1f MB %.0f s later", h.Inuse, rssMB(tb, p), settle.Seconds())
}
