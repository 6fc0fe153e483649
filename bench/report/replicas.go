package main

import (
	"fmt"
	"slices"
	"strings"

	"meshd/bench"
)

const secReplicas = "6. Replicas on PostgreSQL"

// replicaRows turns the benchmarks of replicas on PostgreSQL (internal/
// control's Replica* and StartMaps, internal/signal's CrossInstance*,
// store/pgcluster's Publish) into rows, each PostgreSQL figure next to the
// SQLite one (or, for signal, one instance) of the same run. A benchmark
// run several times (-count) gives the median, its runs listed. The notes
// say where the time goes, from the CPU the benchmarks measured in their
// process and in PostgreSQL.
func replicaRows(rs []benchResult, load []float64) []bench.Row {
	runs := map[string][]benchResult{}
	var names []string
	for _, r := range rs {
		if !slices.Contains(names, r.Name) {
			names = append(names, r.Name)
		}
		runs[r.Name] = append(runs[r.Name], r)
	}
	// med is the median of metric over the runs of name, and those runs.
	med := func(name, metric string) (float64, []float64) {
		var vs []float64
		for _, r := range runs[name] {
			if v, ok := r.Metrics[metric]; ok {
				vs = append(vs, v)
			}
		}
		return bench.Median(vs), vs
	}
	row := func(fig, unit, name, metric, refName, ref, refMetric string, scale float64) (bench.Row, bool) {
		v, vs := med(name, metric)
		if len(vs) == 0 {
			return bench.Row{}, false
		}
		r := bench.Row{Section: secReplicas, Figure: fig, Unit: unit, Value: v * scale, Runs: scaled(vs, scale), Load: load}
		if rv, rvs := med(refName, refMetric); len(rvs) > 0 {
			r.Ref, r.RefValue, r.RefRuns, r.RefMeasured = ref, rv*scale, scaled(rvs, scale), true
		}
		return r, true
	}
	var rows []bench.Row
	add := func(r bench.Row, ok bool, note string) {
		if ok {
			r.Note = note
			rows = append(rows, r)
		}
	}
	m := func(name, metric string) float64 { v, _ := med(name, metric); return v }

	const sqliteJoins = "ReplicaJoins/sqlite/replicas=1"
	for _, n := range []int{1, 2} {
		name := fmt.Sprintf("ReplicaJoins/postgres/replicas=%d", n)
		r, ok := row(fmt.Sprintf("New peers joining/s (Login with a setup key, 16 clients), %d replica(s) on PostgreSQL", n),
			"joins/s", name, "joins/s", sqliteJoins, "SQLite, 1 replica", "joins/s", 1)
		note := fmt.Sprintf("CPU per join: control and clients %.2f ms, PostgreSQL %.2f ms (SQLite: %.2f ms in the process); joins to one account are serial (its lock is held over the transaction: setup key, peer, audit event)",
			m(name, "go-cpu-ms/join"), m(name, "pg-cpu-ms/join"), m(sqliteJoins, "go-cpu-ms/join"))
		if n > 1 {
			note += "; each join's NOTIFY makes the other replica load the whole account again under that lock, and joins through both replicas that pick one address retry"
		}
		add(r, ok, note)
	}
	for _, size := range []string{"1000", "5000", "10000"} {
		pg, lite := "StartMaps/store=postgres/peers="+size, "StartMaps/store=sqlite/peers="+size
		r, ok := row(fmt.Sprintf("A replica's start, %s peers: load the account from PostgreSQL, build its state, every peer's map", size),
			"ms", pg, "ns/op", lite, "SQLite", "ns/op", 1e-6)
		add(r, ok, fmt.Sprintf("%s peers: loading %.0f ms on PostgreSQL vs %.0f ms on SQLite; building the state %.0f ms; the maps %.0f ms (%.0f entries per map); only the load depends on the store",
			size, m(pg, "load-ms"), m(lite, "load-ms"), m(pg, "fill-ms"), m(pg, "maps-ms"), m(pg, "entries/map")))
	}
	{
		pg, lite := "ReplicaPolicyFanout/postgres/replicas=2", "ReplicaPolicyFanout/sqlite/replicas=1"
		r, ok := row("Policy change → new map on each of 1,000 Sync streams split over 2 replicas on PostgreSQL (coalescing delay included)",
			"ms", pg, "ns/op", lite, "SQLite, 1 replica", "ns/op", 1e-6)
		if ok {
			r.Aim, r.Met = "< 1 s", bench.Met(r.Value < 1000)
		}
		add(r, ok, fmt.Sprintf("the admin write (transaction + NOTIFY) %.1f ms (SQLite %.1f ms); CPU per change: this process %.0f ms (both replicas and 1,000 agents; SQLite %.0f ms), PostgreSQL %.1f ms; the rest is the coalescing delay and computing and sending the maps",
			m(pg, "write-ms/op"), m(lite, "write-ms/op"), m(pg, "cpu-ms/op"), m(lite, "cpu-ms/op"), m(pg, "pg-cpu-ms/op")))
	}
	{
		r, ok := row("Control's memory per connected peer on PostgreSQL (heap + stacks, 1,000 peers, one TLS connection each)",
			"KB", "ReplicaMemoryPerPeer/postgres/replicas=1", "bytes/peer", "ReplicaMemoryPerPeer/sqlite/replicas=1", "SQLite", "bytes/peer", 1.0/1024)
		add(r, ok, "the same state per peer on both stores (streams, maps, mailboxes); a difference is the store's connections and caches divided by 1,000")
	}
	for _, pairs := range []string{"1", "64"} {
		pg := "CrossInstancePG/across/pairs=" + pairs
		r, ok := row(fmt.Sprintf("Signal messages/s between two instances over the PostgreSQL cluster, %s pair(s), window 64, 150 B", pairs),
			"msgs/s", pg, "msgs/s", "CrossInstance/one-instance/pairs="+pairs, "one instance", "msgs/s", 1)
		if ok && pairs == "64" {
			r.Aim, r.Met = "≥ 10,000", bench.Met(r.Value >= 10000)
		}
		add(r, ok, fmt.Sprintf("%s pair(s): p50 %.1f ms, p99 %.1f ms; %.1f envelopes per NOTIFY; CPU per message (setup included): this process %.0f µs (two instances, the peers, both clusters), PostgreSQL %.0f µs (2 cores / that = %.0f msgs/s); one instance without a bus carries %.0f msgs/s at the same load",
			pairs, m(pg, "p50-µs")/1e3, m(pg, "p99-µs")/1e3, m(pg, "msgs/publish"), m(pg, "go-µs/msg"), m(pg, "pg-µs/msg"),
			2e6/max(m(pg, "pg-µs/msg"), 1), m("CrossInstance/one-instance/pairs="+pairs, "msgs/s")))
	}
	for _, name := range names {
		pubs, ok := strings.CutPrefix(name, "Publish/batched=true/publishers=")
		if !ok {
			continue
		}
		r, ok := row(fmt.Sprintf("pgcluster alone: 256-byte messages/s from one replica to another, %s publisher(s), batched", pubs),
			"msgs/s", name, "msgs/s", "", "", "", 1)
		add(r, ok, fmt.Sprintf("%s publisher(s): CPU per message %.1f µs in the process, %.1f µs in PostgreSQL", pubs, m(name, "go-µs/msg"), m(name, "pg-µs/msg")))
	}
	return rows
}

func scaled(vs []float64, k float64) []float64 {
	out := make([]float64, len(vs))
	for i, v := range vs {
		out[i] = v * k
	}
	return out
}
