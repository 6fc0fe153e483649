//go:build linux

package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"meshd/internal/keys"
	"meshd/internal/lab"
)

// Knobs of the lab benchmarks (bench/run.sh sets them).
const (
	// secondsEnv: seconds of each TCP iperf3 run (default 10).
	secondsEnv = "MESHD_BENCH_SECONDS"
	// quickEnv=1: short UDP probes, settles and fewer simulated agents,
	// for a smoke run.
	quickEnv = "MESHD_BENCH_QUICK"
	// wgGoEnv names a prebuilt wireguard-go (else it is built from the
	// module cache, the version in go.mod).
	wgGoEnv = "MESHD_BENCH_WIREGUARD_GO"
	// profileEnv=DIR: CPU profiles (perf) of both tunnel ends during the
	// first TCP run of each path, as text reports in DIR.
	profileEnv = "MESHD_BENCH_PROFILE"
)

func quick() bool { return os.Getenv(quickEnv) == "1" }

func iperfSeconds() int {
	if n, err := strconv.Atoi(os.Getenv(secondsEnv)); err == nil && n > 0 {
		return n
	}
	return 10
}

// record records r and fails tb when it cannot.
func record(tb testing.TB, r Row) {
	tb.Helper()
	tb.Logf("%s | %s: %.4g %s (runs %v) ref %s %.4g %v | aim %s | load %v | %s",
		r.Section, r.Figure, r.Value, r.Unit, r.Runs, r.Ref, r.RefValue, r.RefRuns, r.Aim, r.Load, r.Note)
	if err := Record(r); err != nil {
		tb.Fatal(err)
	}
}

// iperfPort is the port of every iperf3 server the benchmarks start.
const iperfPort = "5201"

// iperfResult is the part of iperf3's JSON the benchmarks read.
type iperfResult struct {
	Error string `json:"error"`
	End   struct {
		SumSent struct {
			BitsPerSecond float64 `json:"bits_per_second"`
			Retransmits   int     `json:"retransmits"`
		} `json:"sum_sent"`
		SumReceived struct {
			Bytes         int64   `json:"bytes"`
			BitsPerSecond float64 `json:"bits_per_second"`
			LostPercent   float64 `json:"lost_percent"`
		} `json:"sum_received"`
	} `json:"end"`
}

// iperf runs an iperf3 client on from against a one-off server on to,
// bound to addr; args are more client flags ("-t", "10", "-u", ...).
func iperf(ctx context.Context, from, to *lab.Host, addr netip.Addr, secs int, args ...string) (*iperfResult, error) {
	srv, err := to.Start("iperf3-server", "iperf3", "-s", "-1", "-B", addr.String(), "-p", iperfPort)
	if err != nil {
		return nil, err
	}
	defer func() {
		t := time.NewTimer(5 * time.Second)
		defer t.Stop()
		select {
		case <-srv.Done():
		case <-t.C:
			srv.Stop()
		}
	}()
	full := append([]string{"iperf3", "-c", addr.String(), "-p", iperfPort, "-J", "-t", strconv.Itoa(secs)}, args...)
	var res iperfResult
	for try := 0; try < 50; try++ { // the server needs a moment to listen
		rctx, cancel := context.WithTimeout(ctx, time.Duration(secs+30)*time.Second)
		out, rerr := from.Run(rctx, full...)
		cancel()
		res = iperfResult{}
		if i, j := strings.IndexByte(out, '{'), strings.LastIndexByte(out, '}'); i >= 0 && j > i {
			out = out[i : j+1]
		}
		if jerr := json.Unmarshal([]byte(out), &res); jerr != nil {
			return nil, fmt.Errorf("iperf3 %s: %v (%v)\n%s", strings.Join(args, " "), jerr, rerr, out)
		}
		refused := strings.Contains(res.Error, "Connection refused") || strings.Contains(res.Error, "unable to connect")
		if !refused {
			if res.Error != "" || rerr != nil {
				return nil, fmt.Errorf("iperf3 to %s %s: %s %v\nserver:\n%s", addr, strings.Join(args, " "), res.Error, rerr, srv.Output())
			}
			return &res, nil
		}
		if !lab.Pause(ctx, 100*time.Millisecond) {
			break
		}
	}
	return nil, fmt.Errorf("iperf3 to %s: the server never listened: %s\n%s", addr, res.Error, srv.Output())
}

// tcpRun is one single-stream TCP run.
type tcpRun struct {
	Gbps        float64
	Retransmits int
}

// tcp is single-stream TCP from → to (addr on to) for secs.
func tcp(ctx context.Context, from, to *lab.Host, addr netip.Addr, secs int) (tcpRun, error) {
	res, err := iperf(ctx, from, to, addr, secs)
	if err != nil {
		return tcpRun{}, err
	}
	return tcpRun{res.End.SumReceived.BitsPerSecond / 1e9, res.End.SumSent.Retransmits}, nil
}

// udpPayload is the UDP payload of the UDP runs: it fits the tunnels' MTU
// of 1280 (1252 bytes of payload), and the raw path uses it too.
const udpPayload = "1200"

// udpProbe is one UDP run at a target rate.
type udpProbe struct {
	TargetMbps float64 // 0: unlimited
	SentMbps   float64
	GotMbps    float64
	LossPct    float64
}

func (p udpProbe) String() string {
	t := "max"
	if p.TargetMbps > 0 {
		t = fmt.Sprintf("%.0f", p.TargetMbps)
	}
	return fmt.Sprintf("%s→%.0f/%.1f%%", t, p.GotMbps, p.LossPct)
}

// udpSocketBuffer is iperf3's socket buffer for UDP (-w): bursts that a
// default 208 KiB receive buffer drops would otherwise hide the tunnels'
// rates behind iperf3's scheduling on a busy machine.
const udpSocketBuffer = "4M"

// udpKnee finds the highest received UDP rate with under 1% loss: a run
// at unlimited rate; then, from 0.9× what arrived there, 0.7× lower until
// a rate passes; then a bisection between the best passing rate and the
// lowest failing one, up to probes runs of secs each in all (3 more while
// none has passed). It returns that rate in Mb/s, whether any probe
// passed, and the probes.
func udpKnee(ctx context.Context, from, to *lab.Host, addr netip.Addr, secs, probes int) (float64, bool, []udpProbe, error) {
	var all []udpProbe
	probe := func(mbps float64) (udpProbe, error) {
		b := "0"
		if mbps > 0 {
			b = fmt.Sprintf("%.0fM", mbps)
		}
		res, err := iperf(ctx, from, to, addr, secs, "-u", "-b", b, "-l", udpPayload, "-w", udpSocketBuffer)
		if err != nil {
			return udpProbe{}, err
		}
		p := udpProbe{TargetMbps: mbps, SentMbps: res.End.SumSent.BitsPerSecond / 1e6,
			GotMbps: res.End.SumReceived.BitsPerSecond / 1e6, LossPct: res.End.SumReceived.LostPercent}
		all = append(all, p)
		return p, nil
	}
	first, err := probe(0)
	if err != nil {
		return 0, false, all, err
	}
	if first.LossPct < 1 {
		return first.GotMbps, true, all, nil // the sender is the limit
	}
	// Under overload the receiver also spends time dropping, so it may
	// take somewhat more than it got at unlimited rate, never more than
	// was sent.
	best, lo, hi := 0.0, 0.0, min(first.SentMbps, 1.5*first.GotMbps)
	next := 0.9 * first.GotMbps
	for (len(all) < probes || lo == 0 && len(all) < probes+3) && next > 1 {
		p, err := probe(next)
		if err != nil {
			return best, lo > 0, all, err
		}
		if p.LossPct < 1 {
			best, lo = max(best, p.GotMbps), next
		} else {
			hi = next
		}
		switch {
		case lo == 0:
			next *= 0.7
		case hi/lo < 1.05:
			return best, true, all, nil
		default:
			next = (lo + hi) / 2
		}
	}
	return best, lo > 0, all, nil
}

// probesString formats UDP probes for a note.
func probesString(ps []udpProbe) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, ", ")
}

// wireguardGo returns the wireguard-go binary: $MESHD_BENCH_WIREGUARD_GO,
// or one built from the module cache (go.mod's version) into tb's temp dir.
func wireguardGo(tb testing.TB) string {
	tb.Helper()
	if p := os.Getenv(wgGoEnv); p != "" {
		return p
	}
	bin := filepath.Join(tb.TempDir(), "wireguard-go")
	cmd := exec.Command("go", "build", "-o", bin, "golang.zx2c4.com/wireguard")
	root, err := lab.ModuleRoot()
	if err != nil {
		tb.Fatal(err)
	}
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("bench: build wireguard-go: %v\n%s", err, out)
	}
	return bin
}

// wgPair is plain wireguard-go between two hosts: its own command, set up
// with wg(8) and ip(8), on UDP port 51821 and 10.201.0.0/24.
type wgPair struct {
	A, B         *lab.Proc
	AddrA, AddrB netip.Addr
}

// startWGPair brings up wireguard-go on a and b (interface MTU mtu) and
// waits until a pings b through it.
func startWGPair(ctx context.Context, tb testing.TB, a, b *lab.Host, mtu int) *wgPair {
	tb.Helper()
	bin := wireguardGo(tb)
	p := &wgPair{AddrA: netip.MustParseAddr("10.201.0.1"), AddrB: netip.MustParseAddr("10.201.0.2")}
	type end struct {
		h     *lab.Host
		iface string
		priv  keys.Private
		addr  netip.Addr
		proc  *lab.Proc
	}
	ends := []*end{{h: a, addr: p.AddrA}, {h: b, addr: p.AddrB}}
	for _, e := range ends {
		e.iface = lab.IfaceName()
		var err error
		if e.priv, err = keys.Generate(); err != nil {
			tb.Fatal(err)
		}
		if e.proc, err = e.h.Start("wireguard-go-"+e.h.Name(), bin, "-f", e.iface); err != nil {
			tb.Fatal(err)
		}
	}
	p.A, p.B = ends[0].proc, ends[1].proc
	dir := tb.TempDir()
	for i, e := range ends {
		sock := "/var/run/wireguard/" + e.iface + ".sock"
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		for {
			if _, err := os.Stat(sock); err == nil {
				break
			}
			if exited, _ := e.proc.Exited(); exited || !lab.Pause(wctx, 20*time.Millisecond) {
				cancel()
				tb.Fatalf("wireguard-go on %s: no UAPI socket %s:\n%s", e.h.Name(), sock, e.proc.Output())
			}
		}
		cancel()
		other := ends[1-i]
		keyFile := filepath.Join(dir, fmt.Sprintf("key%d", i))
		if err := os.WriteFile(keyFile, []byte(e.priv.String()+"\n"), 0o600); err != nil {
			tb.Fatal(err)
		}
		for _, args := range [][]string{
			{"wg", "set", e.iface, "private-key", keyFile, "listen-port", "51821",
				"peer", other.priv.Public().String(), "allowed-ips", other.addr.String() + "/32",
				"endpoint", other.h.IP().String() + ":51821"},
			{"ip", "addr", "add", e.addr.String() + "/24", "dev", e.iface},
			{"ip", "link", "set", e.iface, "mtu", strconv.Itoa(mtu), "up"},
		} {
			if _, err := e.h.Run(ctx, args...); err != nil {
				tb.Fatal(err)
			}
		}
	}
	if _, err := a.WaitPing(ctx, p.AddrB, 10*time.Second); err != nil {
		tb.Fatalf("wireguard-go: %v", err)
	}
	return p
}

// linkMTU is the MTU of iface on h.
func linkMTU(ctx context.Context, h *lab.Host, iface string) (int, error) {
	out, err := h.Run(ctx, "cat", "/sys/class/net/"+iface+"/mtu")
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(out))
}

// waitPath waits until a's view of b is connected on path ("direct",
// "relayed") and b's view of a too.
func waitPath(ctx context.Context, tb testing.TB, a, b *lab.Agent, path string, timeout time.Duration) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for _, pair := range [][2]*lab.Agent{{a, b}, {b, a}} {
		x, y := pair[0], pair[1]
		_, err := x.WaitStatus(ctx, path+" path to "+y.Host.Name(), func(st *lab.Status) bool {
			p := st.Peer(y.OverlayIP())
			return p != nil && p.State == "connected" && p.Path == path
		})
		lab.Must(tb, err)
	}
}

// rssMB is p's resident memory in MB (MiB), or NaN after an error (logged).
func rssMB(tb testing.TB, p *lab.Proc) float64 {
	tb.Helper()
	rss, err := p.RSS()
	if err != nil {
		tb.Logf("bench: %v", err)
		return math.NaN()
	}
	return float64(rss) / (1 << 20)
}

// profile records a CPU profile of each of procs for secs with perf(1)
// and writes it to $MESHD_BENCH_PROFILE/name-<proc>.perf, with a flat
// report of its hottest symbols in name-<proc>.txt; the returned function waits for
// the reports. Without $MESHD_BENCH_PROFILE, or without perf, it does
// nothing. Start it together with the load it should see.
func profile(tb testing.TB, name string, secs int, procs ...*lab.Proc) (wait func()) {
	tb.Helper()
	dir := os.Getenv(profileEnv)
	if dir == "" {
		return func() {}
	}
	if _, err := exec.LookPath("perf"); err != nil {
		tb.Logf("bench: no perf for profiles: %v", err)
		return func() {}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		tb.Fatal(err)
	}
	done := make(chan struct{}, len(procs))
	for _, p := range procs {
		go func() {
			defer func() { done <- struct{}{} }()
			data := filepath.Join(dir, name+"-"+p.Name+".perf")
			rec := exec.Command("perf", "record", "-F", "499", "-g", "-o", data, "-p", strconv.Itoa(p.PID), "--", "sleep", strconv.Itoa(secs))
			if out, err := rec.CombinedOutput(); err != nil {
				tb.Logf("bench: perf record %s: %v\n%s", p.Name, err, out)
				return
			}
			rep, err := exec.Command("perf", "report", "-i", data, "--stdio", "--no-children", "-g", "none",
				"--percent-limit", "0.3", "-n", "--sort", "dso,symbol").Output()
			if err != nil {
				tb.Logf("bench: perf report %s: %v", p.Name, err)
				return
			}
			out := filepath.Join(dir, name+"-"+p.Name+".txt")
			if err := os.WriteFile(out, rep, 0o644); err != nil {
				tb.Logf("bench: %v", err)
			}
		}()
	}
	return func() {
		for range procs {
			<-done
		}
	}
}

// pprofSock is a unix socket path for an agent's --pprof-listen.
func pprofSock(tb testing.TB, l *lab.Lab, name string) string {
	tb.Helper()
	return filepath.Join(l.Dir(), name+".pprof.sock")
}

// pprofGet fetches path (e.g. "/debug/pprof/heap?debug=1") from the pprof
// server on the unix socket sock.
func pprofGet(ctx context.Context, sock, path string) ([]byte, error) {
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock)
	}}
	defer tr.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://pprof"+path, nil)
	if err != nil {
		return nil, err
	}
	resp, err := (&http.Client{Transport: tr, Timeout: time.Minute}).Do(req)
	if err != nil {
		return nil, fmt.Errorf("pprof %s: %w", path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("pprof %s: %s", path, resp.Status)
	}
	return b, err
}

// heapStats are the Go runtime's memory figures of a process, in MB.
type heapStats struct {
	Inuse, Idle, Released, Stack float64
}

func (h heapStats) String() string {
	return fmt.Sprintf("Go heap in use %.1f MB, free but not yet returned to the OS %.1f MB, stacks %.1f MB",
		h.Inuse, h.Idle-h.Released, h.Stack)
}

// readHeapStats reads the runtime.MemStats lines of a heap?debug=1
// profile from the agent's pprof socket.
func readHeapStats(ctx context.Context, sock string) (heapStats, error) {
	b, err := pprofGet(ctx, sock, "/debug/pprof/heap?debug=1")
	if err != nil {
		return heapStats{}, err
	}
	var h heapStats
	mb := func(s string) float64 {
		v, _ := strconv.ParseFloat(strings.TrimSpace(s), 64)
		return v / (1 << 20)
	}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(strings.TrimPrefix(line, "# "), " = ")
		if !ok {
			continue
		}
		switch k {
		case "HeapInuse":
			h.Inuse = mb(v)
		case "HeapIdle":
			h.Idle = mb(v)
		case "HeapReleased":
			h.Released = mb(v)
		case "Stack":
			h.Stack = mb(strings.Split(v, " / ")[0])
		}
	}
	if h.Inuse == 0 {
		return h, fmt.Errorf("pprof heap: no MemStats in %.200q", b)
	}
	return h, nil
}

// saveHeapProfile writes the agent's heap profile and its top allocation
// sites (go tool pprof -top) to $MESHD_BENCH_PROFILE/name-heap.{pb.gz,txt}.
func saveHeapProfile(ctx context.Context, tb testing.TB, sock, name string) {
	tb.Helper()
	dir := os.Getenv(profileEnv)
	if dir == "" {
		return
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		tb.Fatal(err)
	}
	b, err := pprofGet(ctx, sock, "/debug/pprof/heap")
	if err != nil {
		tb.Logf("bench: heap profile %s: %v", name, err)
		return
	}
	pb := filepath.Join(dir, name+"-heap.pb.gz")
	if err := os.WriteFile(pb, b, 0o644); err != nil {
		tb.Logf("bench: %v", err)
		return
	}
	top, err := exec.CommandContext(ctx, "go", "tool", "pprof", "-top", "-sample_index=inuse_space", pb).CombinedOutput()
	if err != nil {
		tb.Logf("bench: go tool pprof %s: %v\n%s", pb, err, top)
		return
	}
	os.WriteFile(filepath.Join(dir, name+"-heap.txt"), top, 0o644)
}

// udpStats are the UDP counters of a namespace (/proc/net/snmp).
type udpStats map[string]int64

// readUDPStats reads h's UDP counters; nil on error.
func readUDPStats(ctx context.Context, h *lab.Host) udpStats {
	out, err := h.Run(ctx, "cat", "/proc/net/snmp")
	if err != nil {
		return nil
	}
	var names []string
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) < 2 || f[0] != "Udp:" {
			continue
		}
		if names == nil {
			names = f[1:]
			continue
		}
		st := udpStats{}
		for i, v := range f[1:] {
			if i < len(names) {
				st[names[i]], _ = strconv.ParseInt(v, 10, 64)
			}
		}
		return st
	}
	return nil
}

// udpDrops says what UDP dropped on h between before and after: receive
// buffer overflows and other input errors.
func udpDrops(name string, before, after udpStats) string {
	if before == nil || after == nil {
		return name + ": ?"
	}
	return fmt.Sprintf("%s: %d rcvbuf, %d in-errors, %d sndbuf", name,
		after["RcvbufErrors"]-before["RcvbufErrors"], after["InErrors"]-before["InErrors"], after["SndbufErrors"]-before["SndbufErrors"])
}

// udpSocketDrops lists h's UDP sockets that dropped datagrams (ss -uanmp:
// local address, receive buffer size, drops, process) to name the socket
// that overflowed; "" when none did.
func udpSocketDrops(ctx context.Context, h *lab.Host) string {
	out, err := h.Run(ctx, "ss", "-uanmpH")
	if err != nil {
		return ""
	}
	var found []string
	lines := strings.Split(out, "\n")
	for i := 0; i < len(lines); i++ {
		f := strings.Fields(lines[i])
		if len(f) < 4 {
			continue
		}
		local, proc, mem := f[3], "", ""
		for _, x := range f[4:] {
			switch {
			case strings.HasPrefix(x, "users:"):
				proc = x
			case strings.HasPrefix(x, "skmem:"):
				mem = x
			}
		}
		if mem == "" && i+1 < len(lines) && strings.Contains(lines[i+1], "skmem:") {
			mem = strings.TrimSpace(lines[i+1])
			i++
		}
		var rb, drops int64
		for _, kv := range strings.Split(strings.Trim(strings.TrimPrefix(mem, "skmem:"), "()"), ",") {
			switch {
			case strings.HasPrefix(kv, "rb"):
				rb, _ = strconv.ParseInt(kv[2:], 10, 64)
			case strings.HasPrefix(kv, "d"):
				drops, _ = strconv.ParseInt(kv[1:], 10, 64)
			}
		}
		if drops > 0 {
			found = append(found, fmt.Sprintf("%s rcvbuf %d KiB dropped %d %s", local, rb/1024, drops, proc))
		}
	}
	return strings.Join(found, "; ")
}
