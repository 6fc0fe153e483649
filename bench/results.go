// Package bench measures meshd against its references and
// writes the figures down. bench/run.sh runs everything and writes
// BENCHMARKS.md; the pieces:
//
//   - this package's benchmarks (*_test.go) run the real meshd binary in
//     the namespace lab (internal/lab): tunnel throughput against raw veth
//     and plain wireguard-go, the relayed path, connection setup, agent
//     memory, and the join rate and memory of `meshd all` with simulated
//     agents. Each appends its figures as Rows to the file named by
//     $MESHD_BENCH_RESULTS;
//   - bench/report turns those Rows, plus the output of the Go benchmarks of
//     internal/netmap, internal/control and internal/signal and of
//     bench/relay, into the Markdown of BENCHMARKS.md;
//   - bench/tunnel.sh (package wg's device alone, static peers),
//     bench/wgpair and bench/relay are standalone tools.
//
// Only bench/report and the benchmarks import this file. The benchmarks
// need root; as root, one of them:
//
//	go test ./bench -run '^$' -bench 'Tunnel' -benchtime 3x -v
package bench

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// ResultsEnv names the file (JSON lines) that Record appends Rows to.
const ResultsEnv = "MESHD_BENCH_RESULTS"

// Row is one line of the results table: a figure of meshd, the reference
// it is compared with and the aim it is held to.
type Row struct {
	// Section groups rows: "1. Tunnel throughput" and so on.
	Section string `json:"section"`
	// Figure says what was measured, e.g. "TCP, single stream, direct".
	Figure string `json:"figure"`
	// Unit of Value and RefValue: "Gb/s", "ms", "MB", "joins/s".
	Unit string `json:"unit"`
	// Value is meshd's figure: the median of Runs when there are several.
	Value float64   `json:"value"`
	Runs  []float64 `json:"runs,omitempty"`
	// Ref names the reference, e.g. "wireguard-go"; empty for none.
	Ref      string    `json:"ref,omitempty"`
	RefValue float64   `json:"ref_value,omitempty"`
	RefRuns  []float64 `json:"ref_runs,omitempty"`
	// PairedRatios are Value's runs over RefRuns round by round, when
	// meshd and the reference alternated within each round: their median
	// is steadier than the ratio of the medians on a shared machine, and
	// it is what Met is decided on then.
	PairedRatios []float64 `json:"paired_ratios,omitempty"`
	// RefMeasured: the reference was measured in this run, alternating
	// with meshd. Otherwise it is an anchor measured elsewhere (NetBird in
	// the same kind of lab on this machine) and given as is.
	RefMeasured bool `json:"ref_measured,omitempty"`
	// Aim in words, e.g. "≥ 1.0× wireguard-go"; Met is nil when the row
	// has no aim.
	Aim string `json:"aim,omitempty"`
	Met *bool  `json:"met,omitempty"`
	// Load is the 1-minute load average at the end of each run.
	Load []float64 `json:"load,omitempty"`
	Note string    `json:"note,omitempty"`
}

// Ratio is Value / RefValue, or NaN without a reference.
func (r Row) Ratio() float64 {
	if r.Ref == "" || r.RefValue == 0 {
		return math.NaN()
	}
	return r.Value / r.RefValue
}

// Met returns a *bool for Row.Met.
func Met(ok bool) *bool { return &ok }

var recordMu sync.Mutex

// Record appends r to the file named by $MESHD_BENCH_RESULTS; without it,
// it does nothing (the benchmark logs its figures anyway).
func Record(r Row) error {
	path := os.Getenv(ResultsEnv)
	if path == "" {
		return nil
	}
	b, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("bench: record %q: %w", r.Figure, err)
	}
	recordMu.Lock()
	defer recordMu.Unlock()
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("bench: record: %w", err)
	}
	_, err = f.Write(append(b, '\n'))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("bench: record: %w", err)
	}
	return nil
}

// ReadRows reads what Record wrote.
func ReadRows(r io.Reader) ([]Row, error) {
	var rows []Row
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64*1024), 4<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		var row Row
		if err := json.Unmarshal([]byte(line), &row); err != nil {
			return nil, fmt.Errorf("bench: results line %d: %w", n, err)
		}
		rows = append(rows, row)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("bench: results: %w", err)
	}
	return rows, nil
}

// Load1 is the machine's 1-minute load average (-1 if unknown).
func Load1() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return -1
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return -1
	}
	v, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		return -1
	}
	return v
}

// Quantile is the q-quantile (0..1) of xs by the nearest rank, or NaN
// when xs is empty. Median is Quantile(xs, 0.5) with the middle two
// averaged for an even count.
func Quantile(xs []float64, q float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[int(q*float64(len(s)-1)+0.5)]
}

// Median of xs (the mean of the middle two for an even count), or NaN.
func Median(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
