package signal_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"meshd/internal/rpcclient"
	"meshd/internal/server"
	"meshd/internal/signal"
	"meshd/internal/signal/signaltest"
	"meshd/internal/tlsconf"
)

// The benchmark runs signal in a process of its own (this test binary,
// re-executed), so that the server's CPU time can be told from the
// clients'. The child prints "URL PIN" and serves until its stdin closes.
const benchServerEnv = "MESHD_SIGNAL_BENCH_SERVER" // "tls" or "h2c"

// With MESHD_SIGNAL_BENCH_CPUPROFILE=FILE the server writes a CPU profile
// of the measured phase (no setup) to FILE, and its allocations to
// FILE.allocs.start and FILE.allocs; with
// MESHD_SIGNAL_BENCH_CLIENT_CPUPROFILE=FILE the clients do (the test
// binary's own -cpuprofile covers the setup too). Each sub-benchmark
// overwrites the files: run one at a time.
const (
	benchCPUProfileEnv       = "MESHD_SIGNAL_BENCH_CPUPROFILE"
	benchClientCPUProfileEnv = "MESHD_SIGNAL_BENCH_CLIENT_CPUPROFILE"
)

func benchServerMode() bool {
	mode := os.Getenv(benchServerEnv)
	if mode == "" {
		return false
	}
	if err := serveForBench(mode == "h2c"); err != nil {
		fmt.Fprintln(os.Stderr, "bench server:", err)
		os.Exit(1)
	}
	return true
}

func serveForBench(h2c bool) error {
	sig := signal.New(signal.Options{RatePerSecond: 1e9, Burst: 1e9})
	var pin string
	srv := server.New(zap.NewNop(), nil)
	if !h2c {
		dir, err := os.MkdirTemp("", "signal-bench")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		ts, err := tlsconf.ServerConfig(tlsconf.Options{DataDir: dir, Hosts: []string{"127.0.0.1"}})
		if err != nil {
			return err
		}
		srv, pin = server.New(zap.NewNop(), ts.Config), ts.Pin
	}
	sig.Mount(srv)
	srv.Handle("GET /stats", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_ = json.NewEncoder(w).Encode(sig.Stats())
	}))
	ln, err := srv.Listen("127.0.0.1:0")
	if err != nil {
		return err
	}
	scheme := "https"
	if h2c {
		scheme = "http"
	}
	fmt.Printf("%s://%s %s\n", scheme, ln.Addr(), pin)
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin) // until the parent goes away
		cancel()
	}()
	if p := os.Getenv(benchCPUProfileEnv); p != "" {
		// The parent brackets the measured phase with these, so that the
		// profile leaves out the TLS handshakes and registrations.
		var f *os.File
		srv.Handle("POST /cpuprofile/start", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			var err error
			if f, err = os.Create(p); err == nil {
				err = pprof.StartCPUProfile(f)
			}
			if err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
			}
		}))
		srv.Handle("POST /cpuprofile/stop", http.HandlerFunc(func(http.ResponseWriter, *http.Request) {
			pprof.StopCPUProfile()
			if f != nil {
				_ = f.Close()
			}
		}))
		// Allocations: FILE.allocs.start and FILE.allocs; the measured
		// phase is the difference (go tool pprof -sample_index=alloc_space
		// -diff_base FILE.allocs.start FILE.allocs).
		writeAllocs := func(path string) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				runtime.GC() // the profile is as of the last GC
				af, err := os.Create(path)
				if err == nil {
					err = pprof.Lookup("allocs").WriteTo(af, 0)
					_ = af.Close()
				}
				if err != nil {
					http.Error(w, err.Error(), http.StatusInternalServerError)
				}
			})
		}
		srv.Handle("POST /allocs/start", writeAllocs(p+".allocs.start"))
		srv.Handle("POST /allocs/stop", writeAllocs(p+".allocs"))
	}
	err = srv.Serve(ctx, ln)
	_ = sig.Close()
	return err
}

// benchServer is the child process.
type benchServer struct {
	*signaltest.Harness
	cmd  *exec.Cmd
	http *http.Client

	clientProfile *os.File
}

func startBenchServer(tb testing.TB, h2c bool) *benchServer {
	tb.Helper()
	mode := "tls"
	if h2c {
		mode = "h2c"
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), benchServerEnv+"="+mode)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		tb.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		stdin.Close()
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		tb.Fatalf("bench server: %v", err)
	}
	url, pin, _ := strings.Cut(strings.TrimSpace(line), " ")
	hc, err := rpcclient.New(url, pin)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(hc.CloseIdleConnections)
	return &benchServer{Harness: &signaltest.Harness{URL: url, Pin: pin}, cmd: cmd, http: hc}
}

// stats asks the child for its counters.
func (s *benchServer) stats(tb testing.TB) signal.Stats {
	tb.Helper()
	resp, err := s.http.Get(s.URL + "/stats")
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	var st signal.Stats
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		tb.Fatal(err)
	}
	return st
}

// profile starts (start true) or stops the child's CPU profile of the
// measured phase and the clients', when asked for by the environment.
func (s *benchServer) profile(tb testing.TB, start bool) {
	tb.Helper()
	if os.Getenv(benchCPUProfileEnv) != "" {
		order := []string{"/allocs/", "/cpuprofile/"} // neither counts the other
		step := "stop"
		if start {
			step = "start"
			order[0], order[1] = order[1], order[0]
		}
		for _, what := range order {
			path := s.URL + what + step
			resp, err := s.http.Post(path, "", nil)
			if err != nil {
				tb.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				tb.Fatalf("bench server: %s: %s", path, resp.Status)
			}
		}
	}
	p := os.Getenv(benchClientCPUProfileEnv)
	switch {
	case p == "":
	case start:
		f, err := os.Create(p)
		if err != nil {
			tb.Fatal(err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			tb.Fatal(err)
		}
		s.clientProfile = f
	default:
		pprof.StopCPUProfile()
		_ = s.clientProfile.Close()
	}
}

// cpu returns the child's CPU time (user and system) so far.
func (s *benchServer) cpu(tb testing.TB) time.Duration {
	tb.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", s.cmd.Process.Pid))
	if err != nil {
		tb.Fatal(err)
	}
	// Fields after the command name, which ends with ')': state is field 3,
	// utime and stime are 14 and 15, in clock ticks (100 a second).
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * 10 * time.Millisecond
}

// syscalls returns how many read and write system calls the child made.
func (s *benchServer) syscalls(tb testing.TB) (reads, writes int64) {
	tb.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", s.cmd.Process.Pid))
	if err != nil {
		tb.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, _ := strings.Cut(line, ": ")
		n, _ := strconv.ParseInt(v, 10, 64)
		switch k {
		case "syscr":
			reads = n
		case "syscw":
			writes = n
		}
	}
	return reads, writes
}

// rss returns the child's resident memory.
func (s *benchServer) rss(tb testing.TB) int64 {
	tb.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", s.cmd.Process.Pid))
	if err != nil {
		tb.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}
