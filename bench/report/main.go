// Command report writes BENCHMARKS.md from what bench/run.sh collected:
// the Rows of the lab benchmarks (package bench), the output of the Go
// benchmarks of internal/netmap, internal/control and internal/signal,
// bench/relay's output and the profiles. It reads the machine's CPU,
// memory and kernel itself. Only bench/run.sh runs it:
//
//	go run ./bench/report -results rows.jsonl -gobench netmap.txt -gobench control.txt \
//	    -gobench signal.txt -relay relay.txt -profiles DIR -commands commands.txt \
//	    -commit HASH -mode full -out BENCHMARKS.md
//
// A Go benchmark or relay output file may hold "# load-before X" and
// "# load-after Y" lines (1-minute load averages), which become the load
// of its rows.
package main

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"meshd/bench"
)

type files []string

func (f *files) String() string     { return strings.Join(*f, ",") }
func (f *files) Set(s string) error { *f = append(*f, s); return nil }

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "report:", err)
		os.Exit(1)
	}
}

func run() error {
	var goBench, relays, extras, failed files
	results := flag.String("results", "", "`FILE` of Rows (JSON lines) from the lab benchmarks")
	flag.Var(&goBench, "gobench", "`FILE` of `go test -bench` output (repeatable)")
	flag.Var(&relays, "relay", "`FILE` of bench/relay output (repeatable)")
	flag.Var(&extras, "extra", "`SECTION::TITLE::FILE`: Markdown to add to a section (repeatable)")
	flag.Var(&failed, "failed", "a step that failed, e.g. \"tunnel (exit 1)\" (repeatable)")
	profiles := flag.String("profiles", "", "`DIR` of profile reports (*.txt)")
	commands := flag.String("commands", "", "`FILE` with the commands run")
	commit := flag.String("commit", "", "git commit measured")
	mode := flag.String("mode", "full", "full or quick")
	started := flag.String("started", "", "start time (RFC 3339)")
	loadStart := flag.String("load-start", "", "load averages at the start")
	finished := flag.String("finished", "", "end time (RFC 3339; default now)")
	loadEnd := flag.String("load-end", "", "load averages at the end (default: now)")
	tools := flag.String("tools", "", "versions of iperf3, wireguard-go, coturn")
	notes := flag.String("notes", "", "`FILE` of hand-written analysis to append")
	out := flag.String("out", "BENCHMARKS.md", "`FILE` to write")
	flag.Parse()

	var rows []bench.Row
	if *results != "" {
		f, err := os.Open(*results)
		if err != nil {
			return err
		}
		rows, err = bench.ReadRows(f)
		f.Close()
		if err != nil {
			return err
		}
	}
	for _, path := range goBench {
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		rs, err := parseGoBench(bytes.NewReader(b))
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		rows = append(rows, benchRows(rs, loads(b))...)
		rows = append(rows, replicaRows(rs, loads(b))...)
	}
	var rr []relayResult
	var rload []float64
	for _, path := range relays {
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		r, err := parseRelay(bytes.NewReader(b))
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		rr = append(rr, r...)
		rload = append(rload, loads(b)...)
	}
	rows = append(rows, relayRows(rr, rload)...)
	if len(rows) == 0 {
		return errors.New("no results to write")
	}

	m := meta{Commit: *commit, Mode: *mode, Go: runtime.Version(), Tools: *tools, LoadStart: *loadStart,
		Cores: runtime.NumCPU(), CPU: cpuModel(), Kernel: kernel(), Memory: memTotal(), LoadEnd: loadAvg()}
	if *loadEnd != "" {
		m.LoadEnd = *loadEnd
	}
	now := time.Now().UTC()
	if t, err := time.Parse(time.RFC3339, *finished); err == nil {
		now = t.UTC()
	}
	m.Date = now.Format("2006-01-02 15:04 MST")
	if t, err := time.Parse(time.RFC3339, *started); err == nil {
		m.Date = t.UTC().Format("2006-01-02 15:04 MST")
		m.Duration = now.Sub(t).Round(time.Second).String()
	}
	m.Failed = failed
	for _, e := range extras {
		parts := strings.SplitN(e, "::", 3)
		if len(parts) != 3 {
			return fmt.Errorf("-extra %q: want SECTION::TITLE::FILE", e)
		}
		b, err := os.ReadFile(parts[2])
		if err != nil {
			return err
		}
		m.Extras = append(m.Extras, extra{Section: parts[0], Title: parts[1], Text: string(b)})
	}
	if *commands != "" {
		b, err := os.ReadFile(*commands)
		if err != nil {
			return err
		}
		m.Commands = string(b)
	}
	if *notes != "" {
		b, err := os.ReadFile(*notes)
		if err != nil {
			return err
		}
		m.Notes = string(b)
	}
	if *profiles != "" {
		var err error
		if m.Profiles, err = readProfiles(*profiles, 12); err != nil {
			return err
		}
	}
	var buf bytes.Buffer
	render(&buf, m, rows)
	return os.WriteFile(*out, buf.Bytes(), 0o644)
}

// loads reads the "# load-before X" / "# load-after Y" lines of b.
func loads(b []byte) []float64 {
	var ls []float64
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 3 && f[0] == "#" && (f[1] == "load-before" || f[1] == "load-after") {
			if v, err := strconv.ParseFloat(f[2], 64); err == nil {
				ls = append(ls, v)
			}
		}
	}
	return ls
}

// readProfiles reads the first n entries of every *.txt report in dir:
// perf reports (their "#" header dropped) and `go tool pprof -top` output
// (from its column header on).
func readProfiles(dir string, n int) ([]profile, error) {
	paths, err := filepath.Glob(filepath.Join(dir, "*.txt"))
	if err != nil {
		return nil, err
	}
	var ps []profile
	for _, path := range paths {
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, err
		}
		var keep []string
		taking := false
		for _, line := range strings.Split(string(b), "\n") {
			line = strings.TrimRight(line, " -")
			line = strings.TrimRight(strings.TrimSuffix(line, "[IPC Coverage]"), " ")
			line = strings.TrimRight(strings.TrimSuffix(line, "IPC"), " ")
			switch {
			case strings.HasPrefix(line, "# Samples"), strings.HasPrefix(line, "Showing nodes"):
				keep = append(keep, line)
			case strings.Contains(line, "flat%"), strings.HasPrefix(line, "# Overhead"):
				keep = append(keep, strings.TrimPrefix(line, "# "))
				taking = true
			case taking && strings.TrimSpace(line) != "" && !strings.HasPrefix(line, "#") && len(keep) < n+3:
				keep = append(keep, line)
			}
		}
		if len(keep) > 0 {
			ps = append(ps, profile{Name: strings.TrimSuffix(filepath.Base(path), ".txt"), Text: strings.Join(keep, "\n")})
		}
	}
	return ps, nil
}

func cpuModel() string {
	b, _ := os.ReadFile("/proc/cpuinfo")
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown CPU"
}

func kernel() string {
	b, err := os.ReadFile("/proc/sys/kernel/osrelease")
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(b))
}

func memTotal() string {
	b, _ := os.ReadFile("/proc/meminfo")
	for _, line := range strings.Split(string(b), "\n") {
		var kb int64
		if _, err := fmt.Sscanf(line, "MemTotal: %d kB", &kb); err == nil {
			return fmt.Sprintf("%.0f GiB", float64(kb)/(1<<20))
		}
	}
	return "unknown"
}

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], ", ")
}
