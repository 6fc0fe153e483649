//go:build linux

// Package lab builds test networks on one Linux machine: every host and
// every router is a network namespace, veth pairs are the cables, a bridge in
// an "internet" namespace is the public side (198.51.100.0/24), and nftables
// in each router namespace makes the kind of NAT under test (see Kind). It
// also starts the real meshd binary in those namespaces (meshd.go).
//
// The root namespace gets nothing: every address, route and link lives in a
// namespace the lab made, named "mlab-<pid>-<n>-<node>" so that parallel runs
// and other people's namespaces never collide. Cleanup always happens: the
// lab's processes (by PID) and namespaces go in tb.Cleanup, on failure too;
// Main adds a SIGINT/SIGTERM handler that tears down every live lab, and
// New sweeps namespaces left behind by test processes that died.
//
// Only tests and benchmarks import it (internal/lab's own tests, bench/).
// Everything here needs root; New skips the test when not root.
//
// Running it (as root):
//
//	go test ./internal/lab/ -v                       # everything, a few minutes
//	go test ./internal/lab/ -run 'TestNAT' -v        # the routers, plain UDP, no meshd
//	go test ./internal/lab/ -run TestMeshMatrix -v   # the connectivity matrix
//	go test ./internal/lab/ -short                   # without the meshd end-to-end tests
//
// The meshd tests build the binary once per run (go build from the module
// root) unless $MESHD_LAB_BINARY names one; $MESHD_LAB_LOGS=DIR keeps
// every process log after the run. A binary that does not build or a
// command that fails is a test failure, never a skip. With -v every
// scenario logs how long each step took ("lab: step ...").
package lab

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// Prefix starts the name of every namespace the lab makes.
const Prefix = "mlab-"

// Addresses of the lab's internet. Nodes get .10 and up.
var (
	internetNet    = netip.MustParsePrefix("198.51.100.0/24")
	internetBridge = netip.MustParseAddr("198.51.100.1")
)

// labSeq numbers the labs of this process; ifaceSeq numbers the meshd
// interfaces (their UAPI sockets share /var/run/wireguard across namespaces).
var (
	seqMu    sync.Mutex
	labSeq   int
	ifaceSeq int
)

// live is every lab not yet closed, for the signal handler.
var (
	liveMu sync.Mutex
	live   = map[*Lab]struct{}{}
)

var sweepOnce sync.Once

// Lab is one topology: its namespaces, the processes started in them and
// the sockets the test opened there. Make it with New; it closes itself
// in tb.Cleanup.
type Lab struct {
	tb  testing.TB
	id  string // "mlab-<pid>-<n>"
	dir string

	mu        sync.Mutex // guards what follows, up to life
	socks     string     // short directory for unix sockets
	nodes     []*node
	procs     []*Proc
	closers   []func()
	inet      *node
	nextPub   int // last octet of the next public address
	nextLAN   int // third octet of the next router's LAN
	nextLink  int // veth names on shared bridges
	script    strings.Builder
	closeOnce sync.Once
	// life orders teardown against creation: namespaces and processes are
	// made under its read lock, Close takes the write lock, so nothing is
	// made after Close looked (a signal may tear down mid-build).
	life     sync.RWMutex
	closed   bool
	started  time.Time
	lastStep time.Time
}

// New makes an empty lab with its internet (a bridge in its own namespace)
// and registers its teardown with tb.Cleanup. It skips tb when not root.
func New(tb testing.TB) *Lab {
	tb.Helper()
	SkipUnlessRoot(tb)
	sweepOnce.Do(func() { Sweep(tb.Logf) })

	seqMu.Lock()
	labSeq++
	n := labSeq
	seqMu.Unlock()

	now := time.Now()
	l := &Lab{
		tb:       tb,
		id:       fmt.Sprintf("%s%d-%d", Prefix, os.Getpid(), n),
		dir:      tb.TempDir(),
		nextPub:  10,
		nextLAN:  1,
		started:  now,
		lastStep: now,
	}
	liveMu.Lock()
	live[l] = struct{}{}
	liveMu.Unlock()
	tb.Cleanup(l.Close)

	inet, err := l.newNode("inet")
	if err != nil {
		tb.Fatalf("lab: %v", err)
	}
	if err := inet.ipBatch(
		"link add br0 type bridge",
		"addr add "+internetBridge.String()+"/24 dev br0",
		"link set br0 up",
	); err != nil {
		tb.Fatalf("lab: internet: %v", err)
	}
	if err := inet.fastARP("br0"); err != nil {
		tb.Fatalf("lab: internet: %v", err)
	}
	l.inet = inet
	return l
}

// SkipUnlessRoot skips tb when the process is not root.
func SkipUnlessRoot(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("lab: needs root (network namespaces, nftables, TUN)")
	}
}

// ID is the lab's namespace prefix, "mlab-<pid>-<n>".
func (l *Lab) ID() string { return l.id }

// Dir is the lab's scratch directory (process logs, state dirs).
func (l *Lab) Dir() string { return l.dir }

// Internet is the namespace holding the public bridge br0
// (198.51.100.1/24). It forwards nothing: a packet to an address nobody
// has dies there.
func (l *Lab) Internet() *Node { return &Node{l.inet} }

// Step logs how long the part of the scenario since the previous Step (or
// New) took, and the total so far.
func (l *Lab) Step(name string) {
	l.tb.Helper()
	now := time.Now()
	l.mu.Lock()
	d, total := now.Sub(l.lastStep), now.Sub(l.started)
	l.lastStep = now
	l.mu.Unlock()
	l.tb.Logf("lab: step %-28s %7.2fs (total %.2fs)", name, d.Seconds(), total.Seconds())
}

// Script is every command the lab ran to build the topology, one a line.
func (l *Lab) Script() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.script.String()
}

// OnClose registers fn to run at teardown, after the processes stop and
// before the namespaces go. Sockets opened inside namespaces go here.
func (l *Lab) OnClose(fn func()) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closers = append(l.closers, fn)
}

// Close stops every process, runs the OnClose functions and deletes every
// namespace. It runs once; tb.Cleanup and the signal handler call it.
func (l *Lab) Close() {
	l.closeOnce.Do(func() {
		l.life.Lock()
		l.closed = true
		l.life.Unlock()
		l.mu.Lock()
		procs, closers, nodes := l.procs, l.closers, l.nodes
		l.mu.Unlock()

		if l.tb.Failed() {
			for _, p := range procs {
				l.tb.Logf("lab: log of %s (%s), last lines:\n%s", p.Name, p.LogPath, tail(p.Output(), 60))
			}
		}
		stopAll(procs)
		l.keepLogs(procs)
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i]()
		}
		for i := len(nodes) - 1; i >= 0; i-- {
			if err := removeNamespace(nodes[i].ns); err != nil {
				l.tb.Logf("lab: %v", err)
			}
		}
		liveMu.Lock()
		delete(live, l)
		liveMu.Unlock()
	})
}

// LogsEnv names a directory where teardown copies every process log (to
// DIR/<test name>/), so they outlive t.TempDir.
const LogsEnv = "MESHD_LAB_LOGS"

func (l *Lab) keepLogs(procs []*Proc) {
	dir := os.Getenv(LogsEnv)
	if dir == "" || len(procs) == 0 {
		return
	}
	dir = filepath.Join(dir, strings.ReplaceAll(l.tb.Name(), "/", "_"))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		l.tb.Logf("lab: keep logs: %v", err)
		return
	}
	for _, p := range procs {
		if b, err := os.ReadFile(p.LogPath); err == nil {
			os.WriteFile(filepath.Join(dir, filepath.Base(p.LogPath)), b, 0o644)
		}
	}
	os.WriteFile(filepath.Join(dir, "lab-script.txt"), []byte(l.Script()), 0o644)
	l.tb.Logf("lab: process logs kept in %s", dir)
}

func (l *Lab) record(line string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.script.WriteString(line)
	l.script.WriteByte('\n')
}

func (l *Lab) allocPublic() (netip.Addr, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.nextPub > 254 {
		return netip.Addr{}, fmt.Errorf("lab: out of public addresses in %s", internetNet)
	}
	a := netip.AddrFrom4([4]byte{198, 51, 100, byte(l.nextPub)})
	l.nextPub++
	return a, nil
}

func (l *Lab) linkName(prefix string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.nextLink++
	return fmt.Sprintf("%s%d", prefix, l.nextLink)
}

// errClosed is what building on a closed lab returns.
var errClosed = errors.New("lab closed")

// building runs fn unless the lab is closed, with teardown held off.
func (l *Lab) building(fn func() error) error {
	l.life.RLock()
	defer l.life.RUnlock()
	if l.closed {
		return errClosed
	}
	return fn()
}

func (l *Lab) addProc(p *Proc) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.procs = append(l.procs, p)
}

// Main runs the tests of a package that uses the lab: it sweeps stale
// namespaces, tears every live lab down on SIGINT or SIGTERM, removes the
// meshd binary built for the run, and checks for leaked goroutines.
//
//	func TestMain(m *testing.M) { lab.Main(m) }
func Main(m *testing.M) {
	if os.Geteuid() == 0 {
		sweepOnce.Do(func() { Sweep(func(f string, a ...any) { fmt.Fprintf(os.Stderr, f+"\n", a...) }) })
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	stop := make(chan struct{})
	handled := make(chan struct{})
	go func() {
		defer close(handled)
		select {
		case s := <-sigs:
			fmt.Fprintf(os.Stderr, "lab: %v: tearing down every lab\n", s)
			closeAll()
			removeBinaryDir()
			os.Exit(130)
		case <-stop:
		}
	}()

	code := m.Run()

	signal.Stop(sigs)
	close(stop)
	<-handled
	closeAll() // labs whose test panicked
	removeBinaryDir()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "lab: goroutines leaked: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

func closeAll() {
	liveMu.Lock()
	labs := make([]*Lab, 0, len(live))
	for l := range live {
		labs = append(labs, l)
	}
	liveMu.Unlock()
	for _, l := range labs {
		l.Close()
	}
}

var staleName = regexp.MustCompile(`^` + regexp.QuoteMeta(Prefix) + `(\d+)-`)

// Sweep deletes the namespaces (and kills the processes in them) of lab
// runs whose test process is gone, e.g. after a SIGKILL or a -timeout
// panic. Namespaces of live processes, including other parallel runs, are
// left alone. logf reports what it removed.
func Sweep(logf func(string, ...any)) {
	entries, err := os.ReadDir("/run/netns")
	if err != nil {
		return // no namespaces at all
	}
	for _, e := range entries {
		m := staleName.FindStringSubmatch(e.Name())
		if m == nil {
			continue
		}
		pid, err := strconv.Atoi(m[1])
		if err != nil || pid == os.Getpid() || processAlive(pid) {
			continue
		}
		if err := removeNamespace(e.Name()); err != nil {
			logf("lab: sweep: %v", err)
			continue
		}
		logf("lab: swept stale namespace %s (pid %d is gone)", e.Name(), pid)
	}
	// UAPI sockets of wireguard-go interfaces named by iface().
	socks, _ := filepath.Glob("/var/run/wireguard/ml*-*.sock")
	for _, s := range socks {
		var pid, n int
		if _, err := fmt.Sscanf(filepath.Base(s), "ml%d-%d.sock", &pid, &n); err == nil && pid != os.Getpid() && !processAlive(pid) {
			os.Remove(s)
		}
	}
}

// processAlive reports whether pid runs (a zombie does not).
func processAlive(pid int) bool {
	if err := syscall.Kill(pid, 0); err != nil && err != syscall.EPERM {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// "pid (comm) S ...": the state follows the last ')'.
	i := strings.LastIndexByte(string(b), ')')
	return i < 0 || i+2 >= len(b) || b[i+2] != 'Z'
}

// removeNamespace kills what still runs in ns and deletes it.
func removeNamespace(ns string) error {
	if out, err := exec.Command("ip", "netns", "pids", ns).Output(); err == nil {
		for _, f := range strings.Fields(string(out)) {
			if pid, err := strconv.Atoi(f); err == nil && pid > 1 {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
	out, err := exec.Command("ip", "netns", "delete", ns).CombinedOutput()
	if err != nil && !strings.Contains(string(out), "No such file") {
		return fmt.Errorf("delete namespace %s: %v: %s", ns, err, strings.TrimSpace(string(out)))
	}
	return nil
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
