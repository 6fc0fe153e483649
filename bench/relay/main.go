//go:build linux

// Command relay benchmarks TURN relays on loopback: relayed throughput for
// N pairs of clients and the relay process's CPU seconds per GB relayed.
// It is not part of meshd.
//
// Each pair is two allocations bound to each other by channels, as two
// relayed WireGuard peers are: A sends 1280-byte payloads as ChannelData
// (sendmmsg), the relay moves them from A's relayed address to B's and on
// to B as ChannelData (recvmmsg), with a window of packets in flight.
// With -mode peer, B is a plain UDP socket (a peer reached directly) that
// gets the bare payloads from A's relayed address. The relay runs in a process of its own (meshd's nat/relay in a
// re-executed copy of this program, or coturn's turnserver) so that its
// CPU time is read from /proc apart from the clients'.
//
//	go run ./bench/relay -target meshd,coturn -pairs 1,10 -packets 300000 [-mode peer]
//
// -cpuprofile writes the meshd relay's CPU profile (meshd target only).
// Linux only (/proc, getrusage).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"meshd/nat/relay"
	"meshd/nat/relay/relaytest"
)

const secret = "bench-relay-secret"

func main() {
	serve := flag.String("serve", "", "internal: run the meshd relay on `HOST:PORT` until SIGTERM")
	workers := flag.Int("workers", 0, "meshd relay: UDP worker sockets (0: GOMAXPROCS)")
	cpuprofile := flag.String("cpuprofile", "", "meshd relay: write its CPU profile to `FILE`")
	targets := flag.String("target", "meshd", "comma-separated relays to measure: meshd, coturn")
	pairsList := flag.String("pairs", "1,10", "comma-separated numbers of client pairs")
	packets := flag.Int("packets", 300000, "packets per run, split over the pairs")
	size := flag.Int("size", 1280, "payload bytes per packet (WireGuard-sized)")
	runs := flag.Int("runs", 1, "runs per configuration (the best is reported too)")
	mode := flag.String("mode", "relayed", "relayed: both ends allocate (relay to relay); peer: the receiver is a plain UDP socket")
	flag.Parse()

	if *serve != "" {
		if err := serveMeshd(*serve, *workers, *cpuprofile); err != nil {
			fmt.Fprintln(os.Stderr, "relay bench server:", err)
			os.Exit(1)
		}
		return
	}
	if *mode != "relayed" && *mode != "peer" {
		fmt.Fprintln(os.Stderr, "relay bench: -mode: want relayed or peer")
		os.Exit(2)
	}
	if err := run(strings.Split(*targets, ","), *pairsList, *mode, *packets, *size, *runs, *workers, *cpuprofile); err != nil {
		fmt.Fprintln(os.Stderr, "relay bench:", err)
		os.Exit(1)
	}
}

// serveMeshd is the child: the meshd relay alone in its process.
func serveMeshd(addr string, workers int, cpuprofile string) error {
	if cpuprofile != "" {
		f, err := os.Create(cpuprofile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	s, err := relay.New(relay.Options{
		Log:        zap.NewNop(),
		Secret:     []byte(secret),
		PublicIP:   netip.MustParseAddr("127.0.0.1"),
		ListenAddr: addr,
		Workers:    workers,
	})
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	return s.Run(ctx)
}

// server is a relay under test in its own process.
type server struct {
	name string
	addr netip.AddrPort
	pid  int
	stop func()
}

func startMeshd(workers int, cpuprofile string) (*server, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	addr := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(port))
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	args := []string{"-serve", addr.String(), "-workers", strconv.Itoa(workers)}
	if cpuprofile != "" {
		args = append(args, "-cpuprofile", cpuprofile)
	}
	cmd := exec.Command(self, args...)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	stop := func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
	}
	if err := relaytest.WaitSTUN(addr.String(), 10*time.Second); err != nil {
		stop()
		return nil, fmt.Errorf("meshd relay: %w", err)
	}
	return &server{name: "meshd", addr: addr, pid: cmd.Process.Pid, stop: stop}, nil
}

func startCoturn() (*server, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	relayMin, err := freePort()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "bench-coturn")
	if err != nil {
		return nil, err
	}
	c, err := relaytest.RunCoturn(secret, relay.DefaultRealm, port, min(relayMin, 65535-50), dir)
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	return &server{name: "coturn", addr: netip.MustParseAddrPort(c.Addr), pid: c.Pid(), stop: func() {
		c.Stop()
		os.RemoveAll(dir)
	}}, nil
}

func run(targets []string, pairsList, mode string, packets, size, runs, workers int, cpuprofile string) error {
	var pairCounts []int
	for _, s := range strings.Split(pairsList, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 {
			return fmt.Errorf("-pairs %q: want numbers >= 1", pairsList)
		}
		pairCounts = append(pairCounts, n)
	}
	fmt.Printf("# %s mode, %d-byte payloads, %d packets per run, loopback; relay CPU from /proc, clients' from getrusage\n", mode, size, packets)
	fmt.Printf("%-7s %5s %10s %13s %7s %14s %15s\n", "relay", "pairs", "Mb/s", "Mb/s/pair", "loss%", "relay cpu-s/GB", "client cpu-s/GB")
	for _, target := range targets {
		for _, pairs := range pairCounts {
			var srv *server
			var err error
			switch strings.TrimSpace(target) {
			case "meshd":
				srv, err = startMeshd(workers, cpuprofile)
			case "coturn":
				srv, err = startCoturn()
			default:
				return fmt.Errorf("-target %q: want meshd or coturn", target)
			}
			if err != nil {
				return err
			}
			err = measure(srv, mode, pairs, packets, size, runs)
			srv.stop()
			if err != nil {
				return err
			}
		}
	}
	return nil
}

func measure(srv *server, mode string, pairs, packets, size, runs int) error {
	newPair := relaytest.NewPair
	if mode == "peer" {
		newPair = relaytest.NewPeerPair
	}
	ps := make([]*relaytest.Pair, pairs)
	for i := range ps {
		p, err := newPair(srv.addr, []byte(secret), fmt.Sprintf("pair%d", i))
		if err != nil {
			return fmt.Errorf("%s: pair %d: %w", srv.name, i, err)
		}
		defer p.Close()
		ps[i] = p
	}
	// Warm up: permissions, channels, buffers, the relay's goroutines.
	if _, err := relaytest.Load(ps, size, 2000, 10*time.Second); err != nil {
		return err
	}
	best := 0.0
	for r := 0; r < runs; r++ {
		relay0, err := procCPU(srv.pid)
		if err != nil {
			return err
		}
		self0 := selfCPU()
		res, err := relaytest.Load(ps, size, max(packets/pairs, 1), 2*time.Minute)
		if err != nil {
			return err
		}
		relay1, err := procCPU(srv.pid)
		if err != nil {
			return err
		}
		gb := float64(res.Bytes()) / 1e9
		fmt.Printf("%-7s %5d %10.0f %13.0f %7.2f %14.2f %15.2f\n", srv.name, pairs, res.Mbps(), res.Mbps()/float64(pairs),
			100*res.Loss(), (relay1-relay0).Seconds()/gb, (selfCPU()-self0).Seconds()/gb)
		best = max(best, res.Mbps())
	}
	if runs > 1 {
		fmt.Printf("%-7s %5d %10.0f best\n", srv.name, pairs, best)
	}
	return nil
}

// procCPU is a process's user+system CPU time, from /proc/PID/stat
// (fields 14 and 15, in clock ticks of 1/100 s on Linux).
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces; fields resume after ')'.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, errors.New("unexpected /proc stat format")
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, errors.New("unexpected /proc stat format")
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, errors.New("unexpected /proc stat format")
	}
	const tick = 10 * time.Millisecond // USER_HZ is 100 on Linux
	return time.Duration(utime+stime) * tick, nil
}

func selfCPU() time.Duration {
	var ru unix.Rusage
	_ = unix.Getrusage(unix.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func freePort() (int, error) {
	for attempt := 0; attempt < 50; attempt++ {
		u, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			return 0, err
		}
		port := u.LocalAddr().(*net.UDPAddr).Port
		t, err := net.Listen("tcp4", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		u.Close()
		if err == nil {
			t.Close()
			return port, nil
		}
	}
	return 0, errors.New("no free port")
}
