package main

import (
	"fmt"
	"slices"
	"strings"

	"meshd/bench"
)

const (
	secControl = "3. Control plane"
	secSignal  = "4. Signal and relay"
)

// netbirdFullMapsMS is NetBird's UpdateAccountPeers benchmark for 5,000
// peers, 0.8–1.7 s (internal/netmap's benchmark comment): the low end.
const netbirdFullMapsMS = 800.0

// benchRows turns the Go benchmarks of internal/netmap, internal/control
// and internal/signal into rows. Benchmarks it does not know are skipped.
func benchRows(rs []benchResult, load []float64) []bench.Row {
	var rows []bench.Row
	for _, r := range rs {
		name, size, _ := strings.Cut(r.Name, "/peers=")
		name, _, _ = strings.Cut(name, "/") // Forward/tls/inflight=8
		ms := r.Metrics["ns/op"] / 1e6
		row := bench.Row{Section: secControl, Unit: "ms", Value: ms, Load: load}
		switch name {
		case "FullComputation":
			row.Figure = fmt.Sprintf("Network maps of all %s peers from scratch (index + every map; 200 groups, 100 policies)", size)
			row.Note = fmt.Sprintf("%.0f entries per map", r.Metrics["entries/map"])
			if size == "5000" {
				row.Ref, row.RefValue = "NetBird UpdateAccountPeers, 0.8–1.7 s", netbirdFullMapsMS
			}
		case "Build":
			row.Figure = fmt.Sprintf("Policy index alone, %s peers", size)
		case "PeerJoin":
			row.Figure = fmt.Sprintf("One peer joins: index rebuild + the affected maps, %s peers", size)
			row.Note = fmt.Sprintf("%.0f maps affected", r.Metrics["affected"])
		case "PolicyChangeFanout":
			row.Figure = "Policy change → new map on each of 1,000 connected Sync streams (coalescing delay included)"
			row.Aim, row.Met = "< 1 s", bench.Met(ms < 1000)
			row.Note = fmt.Sprintf("control CPU %.0f ms per change", r.Metrics["cpu-ms/op"])
		case "MemoryPerConnectedPeer":
			row.Figure = "Control's memory per connected peer (heap + stacks, 1,000 peers, one TLS connection each)"
			row.Unit, row.Value = "KB", r.Metrics["bytes/peer"]/1024
		case "Forward":
			row = signalRow(r, load)
		default:
			continue
		}
		rows = append(rows, row)
	}
	return rows
}

// signalRow is a row of internal/signal's BenchmarkForward (1,000 peers,
// each on its own HTTP/2 connection, the server in its own process).
func signalRow(r benchResult, load []float64) bench.Row {
	variant := strings.TrimPrefix(r.Name, "Forward/")
	m := r.Metrics
	row := bench.Row{Section: secSignal, Load: load,
		Note: fmt.Sprintf("p50 %.1f ms, p99 %.1f ms; server CPU %.0f µs/msg (2 cores / that = %.0f msgs/s with the machine to itself); server RSS %.0f MB",
			m["p50-µs"]/1e3, m["p99-µs"]/1e3, m["server-cpu-µs/msg"], 2e6/max(m["server-cpu-µs/msg"], 1), m["server-rss-MB"])}
	proto, load2, _ := strings.Cut(variant, "/")
	switch {
	case strings.HasPrefix(load2, "inflight="):
		open := strings.TrimPrefix(load2, "inflight=")
		sends := "sends"
		if open == "1" {
			sends = "send"
		}
		row.Figure = fmt.Sprintf("Signal messages/s, 1,000 peers, %s, %s %s open per peer (closed loop: sealed, forwarded, opened)",
			strings.ToUpper(proto), open, sends)
		row.Unit, row.Value = "msgs/s", m["msgs/s"]
		if load2 == "inflight=8" {
			row.Aim, row.Met = "≥ 50,000", bench.Met(m["msgs/s"] >= 50000)
		}
	case strings.HasPrefix(load2, "rate="):
		row.Figure = fmt.Sprintf("Signal latency p50, send → recipient's handler, at %s msgs/s offered, 1,000 peers, %s",
			strings.TrimPrefix(load2, "rate="), strings.ToUpper(proto))
		row.Unit, row.Value = "ms", m["p50-µs"]/1e3
		row.Note = fmt.Sprintf("achieved %.0f msgs/s; ", m["msgs/s"]) + row.Note
	default:
		row.Figure, row.Unit, row.Value = "Signal "+variant, "msgs/s", m["msgs/s"]
	}
	return row
}

// relayRows compares meshd's relay with coturn (bench/relay, loopback,
// both measured in this run) for each number of pairs: throughput per
// pair and the relay's CPU per GB. Several result lines of one relay and
// pair count (bench/relay run several times, in alternating order) give
// the median.
func relayRows(rs []relayResult, load []float64) []bench.Row {
	type key struct {
		relay string
		pairs int
	}
	per := map[key][]float64{}
	cpu := map[key][]float64{}
	var pairs []int
	for _, r := range rs {
		k := key{r.Relay, r.Pairs}
		per[k] = append(per[k], r.PerPair)
		cpu[k] = append(cpu[k], r.RelayCPUPerGB)
		if !slices.Contains(pairs, r.Pairs) {
			pairs = append(pairs, r.Pairs)
		}
	}
	var rows []bench.Row
	for _, n := range pairs {
		m, c := key{"meshd", n}, key{"coturn", n}
		if len(per[m]) == 0 {
			continue
		}
		row := bench.Row{Section: secSignal, Figure: fmt.Sprintf("Relayed throughput per pair, %d pair(s), TURN ChannelData both ends, loopback", n),
			Unit: "Mb/s", Value: bench.Median(per[m]), Runs: per[m], Load: load}
		cpuRow := bench.Row{Section: secSignal, Figure: fmt.Sprintf("Relay CPU per GB relayed, %d pair(s)", n),
			Unit: "cpu-s/GB", Value: bench.Median(cpu[m]), Runs: cpu[m], Load: load}
		if len(per[c]) > 0 {
			row.Ref, row.RefValue, row.RefRuns, row.RefMeasured = "coturn", bench.Median(per[c]), per[c], true
			cpuRow.Ref, cpuRow.RefValue, cpuRow.RefRuns, cpuRow.RefMeasured = "coturn", bench.Median(cpu[c]), cpu[c], true
		}
		if n == 1 {
			row.Aim, row.Met = "Gb/s per pair (≥ 1,000 Mb/s)", bench.Met(row.Value >= 1000)
		}
		rows = append(rows, row, cpuRow)
	}
	return rows
}
