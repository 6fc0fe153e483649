package main

import (
	"strings"
	"testing"
)

const replicasOut = `pkg: meshd/internal/control
BenchmarkReplicaJoins/sqlite/replicas=1-2     500   4296786 ns/op   2.119 go-cpu-ms/join   232.7 joins/s   0 pg-cpu-ms/join
BenchmarkReplicaJoins/postgres/replicas=2-2   500  15995307 ns/op   4.818 go-cpu-ms/join    62.52 joins/s  4.380 pg-cpu-ms/join
BenchmarkReplicaJoins/postgres/replicas=2-2   500  15995307 ns/op   4.818 go-cpu-ms/join    70 joins/s  4.380 pg-cpu-ms/join
BenchmarkReplicaJoins/postgres/replicas=2-2   500  15995307 ns/op   4.818 go-cpu-ms/join    80 joins/s  4.380 pg-cpu-ms/join
BenchmarkReplicaPolicyFanout/sqlite/replicas=1-2     1   400000000 ns/op   3.0 write-ms/op   500 cpu-ms/op   0 pg-cpu-ms/op
BenchmarkReplicaPolicyFanout/postgres/replicas=2-2   1  1500000000 ns/op  12.0 write-ms/op   900 cpu-ms/op   8 pg-cpu-ms/op
BenchmarkStartMaps/store=postgres/peers=5000-2   1   900000000 ns/op   300 load-ms   50 fill-ms   550 maps-ms   60 entries/map
BenchmarkStartMaps/store=sqlite/peers=5000-2     1   700000000 ns/op   100 load-ms   50 fill-ms   550 maps-ms   60 entries/map
BenchmarkCrossInstancePG/across/pairs=64-2   50000   50000 ns/op   20000 msgs/s   900 p50-µs   3000 p99-µs   8 msgs/publish   1200 B/publish   60 go-µs/msg   10 pg-µs/msg
BenchmarkCrossInstance/one-instance/pairs=64-2   50000   20000 ns/op   50000 msgs/s   300 p50-µs   900 p99-µs
BenchmarkPublish/batched=true/publishers=64-2   50000   0 ns/op   256 B/s   40000 msgs/s   5 go-µs/msg   3 pg-µs/msg
PASS
`

func TestReplicaRows(t *testing.T) {
	rs, err := parseGoBench(strings.NewReader(replicasOut))
	if err != nil {
		t.Fatal(err)
	}
	rows := replicaRows(rs, []float64{3})
	for _, r := range rows {
		if r.Section != secReplicas {
			t.Errorf("row %q in section %q", r.Figure, r.Section)
		}
	}
	if len(rows) != 5 {
		t.Fatalf("%d rows: %+v", len(rows), rows)
	}
	joins := rows[0]
	if !strings.Contains(joins.Figure, "2 replica(s)") || joins.Value != 70 || len(joins.Runs) != 3 ||
		joins.RefValue != 232.7 || !joins.RefMeasured || !strings.Contains(joins.Note, "PostgreSQL 4.38 ms") {
		t.Errorf("joins row = %+v", joins)
	}
	maps := rows[1]
	if maps.Value != 900 || maps.RefValue != 700 || !strings.Contains(maps.Note, "loading 300 ms on PostgreSQL vs 100 ms on SQLite") {
		t.Errorf("maps row = %+v", maps)
	}
	fan := rows[2]
	if fan.Value != 1500 || fan.RefValue != 400 || fan.Met == nil || *fan.Met {
		t.Errorf("fan-out row = %+v", fan)
	}
	sig := rows[3]
	if sig.Value != 20000 || sig.RefValue != 50000 || sig.Met == nil || !*sig.Met || !strings.Contains(sig.Note, "8.0 envelopes per NOTIFY") {
		t.Errorf("signal row = %+v", sig)
	}
	if pub := rows[4]; pub.Value != 40000 || pub.Ref != "" || !strings.Contains(pub.Figure, "64 publisher(s)") {
		t.Errorf("publish row = %+v", pub)
	}
}
