package main

import (
	"bufio"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"
)

// benchResult is one line of `go test -bench` output.
type benchResult struct {
	Name    string             // without the "Benchmark" prefix and the -GOMAXPROCS suffix
	N       int                // iterations
	Metrics map[string]float64 // unit → value, e.g. "ns/op", "msgs/s"
}

var procsSuffix = regexp.MustCompile(`-\d+$`)

// parseGoBench reads the result lines of `go test -bench` output and
// ignores everything else (logs, PASS, ok).
func parseGoBench(r io.Reader) ([]benchResult, error) {
	var out []benchResult
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64*1024), 1<<20)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 4 || !strings.HasPrefix(f[0], "Benchmark") || len(f)%2 != 0 {
			continue
		}
		n, err := strconv.Atoi(f[1])
		if err != nil {
			continue // a log line that starts with a benchmark's name
		}
		res := benchResult{Name: procsSuffix.ReplaceAllString(strings.TrimPrefix(f[0], "Benchmark"), ""), N: n,
			Metrics: map[string]float64{}}
		ok := true
		for i := 2; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				ok = false
				break
			}
			res.Metrics[f[i+1]] = v
		}
		if ok {
			out = append(out, res)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("go bench output: %w", err)
	}
	return out, nil
}

// relayResult is one result line of bench/relay.
type relayResult struct {
	Relay         string // meshd, coturn
	Pairs         int
	Mbps, PerPair float64
	LossPct       float64
	RelayCPUPerGB float64
}

// parseRelay reads bench/relay's result lines:
//
//	relay   pairs       Mb/s     Mb/s/pair   loss% relay cpu-s/GB client cpu-s/GB
//	meshd       1        574           574    0.00           7.58            6.95
//
// and skips its comments, header and "best" lines.
func parseRelay(r io.Reader) ([]relayResult, error) {
	var out []relayResult
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 7 || strings.HasPrefix(f[0], "#") {
			continue
		}
		var v [6]float64
		ok := true
		for i := range v {
			var err error
			if v[i], err = strconv.ParseFloat(f[i+1], 64); err != nil {
				ok = false
				break
			}
		}
		if !ok {
			continue // the header
		}
		out = append(out, relayResult{Relay: f[0], Pairs: int(v[0]), Mbps: v[1], PerPair: v[2], LossPct: v[3], RelayCPUPerGB: v[4]})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("relay output: %w", err)
	}
	return out, nil
}
