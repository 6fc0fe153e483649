package main

import (
	"bytes"
	"strings"
	"testing"

	"meshd/bench"
)

const goBenchOut = `goos: linux
pkg: meshd/internal/control
BenchmarkPolicyChangeFanout-2       	       3	 391325159 ns/op	       420.3 cpu-ms/op
    bench_test.go:12: BenchmarkPolicyChangeFanout is logging
BenchmarkFullComputation/peers=5000-2   3	 153241851 ns/op	       538.9 entries/map
BenchmarkForward/tls/inflight=8-2   5000	54.59 clients-cpu-µs/msg	22700 msgs/s	107287 p50-µs	194682 p99-µs	32.00 server-cpu-µs/msg	106.1 server-rss-MB
PASS
`

func TestParseGoBench(t *testing.T) {
	rs, err := parseGoBench(strings.NewReader(goBenchOut))
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 3 {
		t.Fatalf("got %d results: %+v", len(rs), rs)
	}
	if rs[0].Name != "PolicyChangeFanout" || rs[0].N != 3 || rs[0].Metrics["cpu-ms/op"] != 420.3 {
		t.Errorf("first = %+v", rs[0])
	}
	if rs[1].Name != "FullComputation/peers=5000" || rs[2].Metrics["msgs/s"] != 22700 {
		t.Errorf("names or metrics: %+v", rs[1:])
	}
}

func TestBenchRows(t *testing.T) {
	rs, _ := parseGoBench(strings.NewReader(goBenchOut))
	rows := benchRows(rs, []float64{1, 2})
	if len(rows) != 3 {
		t.Fatalf("rows = %+v", rows)
	}
	fan, full, sig := rows[0], rows[1], rows[2]
	if fan.Value < 391 || fan.Value > 392 || fan.Met == nil || !*fan.Met {
		t.Errorf("fan-out row = %+v", fan)
	}
	if !strings.Contains(full.Figure, "5000 peers") || full.RefValue != netbirdFullMapsMS || full.RefMeasured {
		t.Errorf("full computation row = %+v", full)
	}
	if sig.Section != secSignal || sig.Value != 22700 || sig.Met == nil || *sig.Met || !strings.Contains(sig.Note, "p50 107.3 ms") {
		t.Errorf("signal row = %+v", sig)
	}
}

const relayOut = `# relayed mode, 1280-byte payloads, 300000 packets per run, loopback
relay   pairs       Mb/s     Mb/s/pair   loss% relay cpu-s/GB client cpu-s/GB
meshd       1        574           574    0.00           7.58            6.95
meshd      10        526            53    0.00           7.37            6.49
coturn      1        397           397    0.33          13.48            8.41
meshd       1        700           700    0.00           7.00            6.00
meshd       1        800 best
`

func TestRelayRows(t *testing.T) {
	rr, err := parseRelay(strings.NewReader(relayOut))
	if err != nil {
		t.Fatal(err)
	}
	if len(rr) != 4 {
		t.Fatalf("parsed %+v", rr)
	}
	rows := relayRows(rr, nil)
	if len(rows) != 4 {
		t.Fatalf("rows = %+v", rows)
	}
	one := rows[0]
	if one.Value != 637 || one.RefValue != 397 || !one.RefMeasured || one.Met == nil || *one.Met {
		t.Errorf("1 pair = %+v (want the median 637 of 574 and 700, coturn 397, aim missed)", one)
	}
	if rows[2].Ref != "" || rows[2].Value != 53 {
		t.Errorf("10 pairs without coturn = %+v", rows[2])
	}
}

func TestRender(t *testing.T) {
	rows := []bench.Row{
		{Section: "1. Tunnel throughput", Figure: "TCP | direct", Unit: "Gb/s", Value: 2.5, Ref: "wireguard-go", RefValue: 2,
			RefMeasured: true, PairedRatios: []float64{1.3, 1.1, 0.9}, Aim: "≥ 1.0× wireguard-go", Met: bench.Met(true),
			Load: []float64{1.5, 2.5}, Note: "per round 1.25"},
		{Section: "5. Memory", Figure: "RSS idle", Unit: "MB", Value: 31.2, Ref: "NetBird", RefValue: 54, Aim: "< 30 MB", Met: bench.Met(false)},
	}
	var buf bytes.Buffer
	render(&buf, meta{Commit: "abc123", Mode: "quick", Cores: 2, Failed: []string{"relay-1 (exit 1)"},
		Extras: []extra{{Section: "1. Tunnel throughput", Title: "Also:", Text: "| a | b |\n"}}}, rows)
	out := buf.String()
	for _, want := range []string{
		"| TCP \\| direct [1] | 2.50 Gb/s | wireguard-go: 2.00 Gb/s (same run) | 1.25× (paired: 1.10×) | ≥ 1.0× wireguard-go | met | 1.50–2.50 |",
		"| RSS idle | 31.2 MB | NetBird: 54.0 MB (anchor) | 0.58× | < 30 MB | **missed** |",
		"1. per round 1.25",
		"relay-1 (exit 1)",
		"Also:\n\n| a | b |",
		"`abc123`",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
	if strings.Index(out, "## 1. Tunnel") > strings.Index(out, "## 5. Memory") {
		t.Error("sections out of order")
	}
}
