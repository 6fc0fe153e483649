//go:build linux

package bench

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"meshd/internal/lab"
)

const secTunnel = "1. Tunnel throughput"

// tunnelPath is one way from host a to host b that the benchmark measures.
type tunnelPath struct {
	name     string
	from, at *lab.Host   // iperf3 client and server
	to       netip.Addr  // at's address on that path
	procs    []*lab.Proc // the tunnel's processes, for profiles (none for raw)
}

// pathRuns collects a path's figures over the rounds.
type pathRuns struct {
	tcp, udp []float64
	udpRound []float64 // by round, 0 where no probe passed
	retrans  []int
	drops    []string // UDP drops on both hosts during each TCP run
	sockets  string   // b's UDP sockets that dropped, after the first run with drops
	probes   []string
}

// BenchmarkTunnel: single-stream TCP (iperf3, $MESHD_BENCH_SECONDS,
// default 10 s) and the UDP loss knee between two public hosts of the lab,
// a → b, over three paths between public hosts of the lab's internet:
//
//   - raw: their eth0 addresses, veth → the internet bridge → veth (the
//     ceiling);
//   - wireguard-go: plain wireguard-go, the module version meshd uses, its
//     own command set up with wg(8), MTU equal to meshd's interface, between
//     two more public hosts of the same kind (its interface in a's
//     namespace would be a network change to the agent, and a path for
//     ICE);
//   - meshd: the real `meshd agent` on both hosts with `meshd all` on a
//     third, once the agents report the direct path.
//
// Each iteration is a round: TCP over raw, then wireguard-go and meshd in
// alternating order, then UDP likewise; the load average is noted after
// each round. The figures are the medians over the rounds.
//
//	go test ./bench -run '^$' -bench '^BenchmarkTunnel$' -benchtime 3x -v
func BenchmarkTunnel(b *testing.B) {
	ctx := context.Background()
	l := lab.New(b)
	srv := lab.StartServer(ctx, b, l.Host("srv", nil))
	ha, hb := l.Host("a", nil), l.Host("b", nil)
	ag := lab.StartAgents(ctx, b, srv.Join, ha, hb)
	waitPath(ctx, b, ag[0], ag[1], "direct", 30*time.Second)
	if _, err := ha.WaitPing(ctx, ag[1].OverlayIP(), 10*time.Second); err != nil {
		b.Fatal(err)
	}
	mtu, err := linkMTU(ctx, ha, ag[0].Iface)
	if err != nil {
		b.Fatal(err)
	}
	hwa, hwb := l.Host("wga", nil), l.Host("wgb", nil)
	wg := startWGPair(ctx, b, hwa, hwb, mtu)
	l.Step("meshd and wireguard-go up")

	raw := tunnelPath{"raw veth", ha, hb, hb.IP(), nil}
	wggo := tunnelPath{"wireguard-go", hwa, hwb, wg.AddrB, []*lab.Proc{wg.A, wg.B}}
	meshd := tunnelPath{"meshd", ha, hb, ag[1].OverlayIP(), []*lab.Proc{ag[0].Proc, ag[1].Proc}}
	secs := iperfSeconds()
	udpSecs, probes := 3, 5
	if quick() {
		udpSecs, probes = 2, 3
	}
	runs := map[string]*pathRuns{raw.name: {}, wggo.name: {}, meshd.name: {}}
	switches0 := relayedSwitches(ag[0])
	var loads []float64
	round := 0
	for b.Loop() {
		order := []tunnelPath{raw, wggo, meshd}
		if round%2 == 1 {
			order = []tunnelPath{raw, meshd, wggo}
		}
		for _, p := range order {
			var wait func()
			if round == 0 && p.procs != nil {
				wait = profile(b, "tunnel-"+strings.ReplaceAll(p.name, " ", "-"), secs-1, p.procs...)
			}
			sa, sb := readUDPStats(ctx, p.from), readUDPStats(ctx, p.at)
			t, err := tcp(ctx, p.from, p.at, p.to, secs)
			if wait != nil {
				wait()
			}
			if err != nil {
				b.Fatalf("%s: %v", p.name, err)
			}
			r := runs[p.name]
			r.drops = append(r.drops, udpDrops("sender", sa, readUDPStats(ctx, p.from))+", "+udpDrops("receiver", sb, readUDPStats(ctx, p.at)))
			if r.sockets == "" {
				r.sockets = udpSocketDrops(ctx, p.at)
			}
			r.tcp = append(r.tcp, t.Gbps)
			r.retrans = append(r.retrans, t.Retransmits)
			b.Logf("round %d: %s TCP %.2f Gb/s, %d retransmits (load %.2f)", round+1, p.name, t.Gbps, t.Retransmits, Load1())
		}
		for _, p := range order {
			m, ok, ps, err := udpKnee(ctx, p.from, p.at, p.to, udpSecs, probes)
			if err != nil {
				b.Fatalf("%s: %v", p.name, err)
			}
			r := runs[p.name]
			r.udpRound = append(r.udpRound, m) // 0: no rate passed
			if ok {
				r.udp = append(r.udp, m)
			}
			r.probes = append(r.probes, probesString(ps))
			b.Logf("round %d: %s UDP knee %.0f Mb/s (%s)", round+1, p.name, m, probesString(ps))
		}
		loads = append(loads, Load1())
		l.Step(fmt.Sprintf("round %d", round+1))
		round++
	}
	b.StopTimer()

	rw, wgr, md := runs[raw.name], runs[wggo.name], runs[meshd.name]
	note := fmt.Sprintf("a's path to b switched to relayed %d times during the rounds (its log); TCP retransmits per run: meshd %v, wireguard-go %v, raw %v; UDP drops during the meshd runs (/proc/net/snmp): %s; receiver's sockets that dropped (ss): meshd %q, wireguard-go %q",
		relayedSwitches(ag[0])-switches0, md.retrans, wgr.retrans, rw.retrans, strings.Join(md.drops, " | "), md.sockets, wgr.sockets)
	tcpPaired, udpPaired := ratios(md.tcp, wgr.tcp), ratios(md.udpRound, wgr.udpRound)
	record(b, Row{Section: secTunnel, Figure: fmt.Sprintf("TCP, 1 stream, %d s, direct path", secs), Unit: "Gb/s",
		Value: Median(md.tcp), Runs: md.tcp, Ref: "wireguard-go", RefValue: Median(wgr.tcp), RefRuns: wgr.tcp, RefMeasured: true,
		PairedRatios: tcpPaired, Aim: "≥ 1.0× wireguard-go", Met: Met(Median(tcpPaired) >= 1.0), Load: loads, Note: note})
	record(b, Row{Section: secTunnel, Figure: fmt.Sprintf("TCP, 1 stream, %d s, direct path", secs), Unit: "Gb/s",
		Value: Median(md.tcp), Runs: md.tcp, Ref: "raw veth (ceiling)", RefValue: Median(rw.tcp), RefRuns: rw.tcp, RefMeasured: true,
		Load: loads, Note: fmt.Sprintf("wireguard-go/raw: %.2f", Median(wgr.tcp)/Median(rw.tcp))})
	udpNote := fmt.Sprintf("%s B payloads, iperf3 -w %s, %d s probes (target Mb/s→received/loss; rounds where none passed are left out); meshd: %s; wireguard-go: %s",
		udpPayload, udpSocketBuffer, udpSecs, strings.Join(md.probes, " | "), strings.Join(wgr.probes, " | "))
	record(b, Row{Section: secTunnel, Figure: "UDP, highest rate with < 1% loss, direct path", Unit: "Mb/s",
		Value: Median(md.udp), Runs: md.udp, Ref: "wireguard-go", RefValue: Median(wgr.udp), RefRuns: wgr.udp, RefMeasured: true,
		PairedRatios: udpPaired, Aim: "≥ 1.0× wireguard-go", Met: Met(Median(udpPaired) >= 1.0), Load: loads, Note: udpNote})
	record(b, Row{Section: secTunnel, Figure: "UDP, highest rate with < 1% loss, direct path", Unit: "Mb/s",
		Value: Median(md.udp), Runs: md.udp, Ref: "raw veth (ceiling)", RefValue: Median(rw.udp), RefRuns: rw.udp, RefMeasured: true,
		Load: loads, Note: "raw: " + strings.Join(rw.probes, " | ")})
}

// relayedSwitches counts the agent's "path relayed" log lines so far.
func relayedSwitches(a *lab.Agent) int { return strings.Count(a.Proc.Output(), "path relayed") }

// ratios is a[i]/b[i] for each round where both are measured (> 0).
func ratios(a, b []float64) []float64 {
	var r []float64
	for i := range min(len(a), len(b)) {
		if a[i] > 0 && b[i] > 0 {
			r = append(r, a[i]/b[i])
		}
	}
	return r
}

// relayedAnchor is NetBird's relayed throughput in the same kind of lab
// on this machine: ~90 Mb/s. The aim is ten times that.
const relayedAnchor = 90.0

// BenchmarkRelayed: two meshd agents
// that cannot reach each other directly, so their tunnel runs through
// `meshd all`'s TURN relay on a public host:
//
//   - symmetric: both behind symmetric NATs (TURN over UDP);
//   - udp-blocked: one behind a router that drops UDP (TURN over TCP), the
//     other behind a home router.
//
// Each iteration is a round: single-stream TCP a → b through the tunnel,
// raw TCP from a to the relay host (one leg of the path, no tunnel: what
// the NAT routers and veths allow), and the UDP loss knee.
//
//	go test ./bench -run '^$' -bench 'Relayed' -benchtime 2x -v
func BenchmarkRelayed(b *testing.B) {
	for _, kinds := range [][2]lab.Kind{{lab.Symmetric, lab.Symmetric}, {lab.UDPBlocked, lab.Home}} {
		name := string(kinds[0])
		b.Run(name, func(b *testing.B) { benchRelayed(b, kinds[0], kinds[1]) })
	}
}

func benchRelayed(b *testing.B, ka, kb lab.Kind) {
	ctx := context.Background()
	l := lab.New(b)
	hs := l.Host("srv", nil)
	srv := lab.StartServer(ctx, b, hs)
	ha := l.Host("a", l.Router("ra", ka))
	hb := l.Host("b", l.Router("rb", kb))
	ag := lab.StartAgents(ctx, b, srv.Join, ha, hb)
	waitPath(ctx, b, ag[0], ag[1], "relayed", 60*time.Second)
	if _, err := ha.WaitPing(ctx, ag[1].OverlayIP(), 10*time.Second); err != nil {
		b.Fatal(err)
	}
	st, err := ag[0].Status(ctx)
	if err != nil {
		b.Fatal(err)
	}
	cand := ""
	if p := st.Peer(ag[1].OverlayIP()); p != nil && p.LocalCandidate != nil {
		cand = p.LocalCandidate.Type + " " + p.LocalCandidate.Address
	}
	l.Step("relayed path up")

	secs := iperfSeconds()
	udpSecs, probes := 3, 5
	if quick() {
		udpSecs, probes = 2, 3
	}
	var tcps, leg, udp, loads []float64
	var retrans []int
	var notes, drops, sockets []string
	round := 0
	for b.Loop() {
		sa, sb, ss := readUDPStats(ctx, ha), readUDPStats(ctx, hb), readUDPStats(ctx, hs)
		var wait func()
		if round == 0 {
			wait = profile(b, "relayed-"+string(ka), secs-1, ag[0].Proc, ag[1].Proc, srv.Proc)
		}
		t, err := tcp(ctx, ha, hb, ag[1].OverlayIP(), secs)
		if wait != nil {
			wait()
		}
		if err != nil {
			b.Fatal(err)
		}
		tcps = append(tcps, t.Gbps*1000)
		retrans = append(retrans, t.Retransmits)
		drops = append(drops, strings.Join([]string{udpDrops("a", sa, readUDPStats(ctx, ha)),
			udpDrops("relay host", ss, readUDPStats(ctx, hs)), udpDrops("b", sb, readUDPStats(ctx, hb))}, ", "))
		if round == 0 {
			for _, h := range []*lab.Host{ha, hs, hb} {
				if d := udpSocketDrops(ctx, h); d != "" {
					sockets = append(sockets, h.Name()+": "+d)
				}
			}
		}
		r, err := tcp(ctx, ha, hs, hs.IP(), secs)
		if err != nil {
			b.Fatal(err)
		}
		leg = append(leg, r.Gbps*1000)
		m, ok, ps, err := udpKnee(ctx, ha, hb, ag[1].OverlayIP(), udpSecs, probes)
		if err != nil {
			b.Fatal(err)
		}
		if ok {
			udp = append(udp, m)
		}
		notes = append(notes, probesString(ps))
		loads = append(loads, Load1())
		b.Logf("round %d: relayed TCP %.0f Mb/s (%d retransmits), raw leg %.0f Mb/s, UDP knee %.0f Mb/s (%s), load %.2f",
			round+1, t.Gbps*1000, t.Retransmits, r.Gbps*1000, m, probesString(ps), Load1())
		round++
	}
	b.StopTimer()
	// The path must still be relayed: a direct path would void the figure.
	st, err = ag[0].Status(ctx)
	if err != nil {
		b.Fatal(err)
	}
	if p := st.Peer(ag[1].OverlayIP()); p == nil || p.Path != "relayed" {
		b.Fatalf("the path changed during the runs: %+v", p)
	}
	what := map[lab.Kind]string{lab.Symmetric: "both behind symmetric NAT (TURN/UDP)",
		lab.UDPBlocked: "UDP blocked on one side (TURN/TCP)"}[ka]
	fig := fmt.Sprintf("TCP, 1 stream, %d s, relayed: %s", secs, what)
	record(b, Row{Section: secTunnel, Figure: fig, Unit: "Mb/s", Value: Median(tcps), Runs: tcps,
		Ref: "NetBird, relayed", RefValue: relayedAnchor,
		Aim: "≥ 900 Mb/s (10× NetBird)", Met: Met(Median(tcps) >= 10*relayedAnchor), Load: loads,
		Note: fmt.Sprintf("a's local candidate: %s; TCP retransmits per run %v; UDP drops during each TCP run (/proc/net/snmp): %s; sockets that dropped (ss, after round 1): %s",
			cand, retrans, strings.Join(drops, " | "), strings.Join(sockets, " | "))})
	record(b, Row{Section: secTunnel, Figure: fig, Unit: "Mb/s", Value: Median(tcps), Runs: tcps,
		Ref: "raw TCP a → relay host (one leg, no tunnel)", RefValue: Median(leg), RefRuns: leg, RefMeasured: true, Load: loads})
	record(b, Row{Section: secTunnel, Figure: "UDP, highest rate with < 1% loss, relayed: " + what, Unit: "Mb/s",
		Value: Median(udp), Runs: udp, Load: loads,
		Note: fmt.Sprintf("%s B payloads, iperf3 -w %s, %d s probes: %s", udpPayload, udpSocketBuffer, udpSecs, strings.Join(notes, " | "))})
}
