//go:build linux

package lab

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// overlayRange holds every overlay network control hands out.
var overlayRange = netip.MustParsePrefix("100.64.0.0/10")

// TestRouteOverRoutingPeerLAN routes the LAN of a peer behind a NAT
// through that same peer, while a client reaches it only through the relay.
// The client then learns the routing peer's LAN address as a host
// candidate, and that address is routed into the tunnel to the very peer:
// a check sent there arrives through the tunnel, and a path selected on it
// would carry WireGuard inside WireGuard (a loop that eats bandwidth and CPU
// and loses the tunnel). No such path may be selected, on either side, and
// traffic must stay bounded while pings through the tunnel and the route
// work.
func TestRouteOverRoutingPeerLAN(t *testing.T) {
	ctx := context.Background()
	l := New(t)
	rb := l.Router("rb", Home)
	alpha := l.Host("alpha", l.Router("ra", Symmetric)) // symmetric vs home: relayed
	bravo := l.Host("bravo", rb)
	srv, ag := startMesh(ctx, t, l, alpha, bravo)
	connect(ctx, t, ag[0], ag[1], 30*time.Second)
	l.Step("alpha pings bravo")

	self, err := ag[1].Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := srv.Admin(ctx, "routes", "create", "--network", rb.LAN().String(), "--peer", self.Self.Name, "--masquerade"); err != nil {
		t.Fatal(err)
	}
	l.Step("route " + rb.LAN().String() + " via bravo created")
	// A fresh start gathers and checks every candidate with the route in
	// place, which is when the loop formed.
	if err := ag[0].Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if err := ag[1].Restart(ctx); err != nil {
		t.Fatal(err)
	}
	waitPeers(ctx, t, ag, 30*time.Second)
	connect(ctx, t, ag[0], ag[1], 30*time.Second)
	if _, err := alpha.WaitPing(ctx, bravo.LANIP(), 30*time.Second); err != nil {
		t.Fatalf("alpha → bravo's LAN address through the route: %v", err)
	}
	l.Step("agents restarted with the route; alpha pings bravo's LAN address")

	bad := []netip.Prefix{overlayRange, rb.LAN()}
	m := measure(ctx, t, ag, 10*time.Second, func(views []peerView) error {
		for _, v := range views {
			for _, c := range []*Candidate{v.p.LocalCandidate, v.p.RemoteCandidate} {
				if c == nil || v.p.State != "connected" {
					continue
				}
				if inAny(c.Address, bad) {
					return fmt.Errorf("%s selected %s %s for %s (%s path): inside the tunnel", v.from, c.Type, c.Address, v.to, v.p.Path)
				}
			}
		}
		return nil
	}, func() {
		got, out := pingSeries(ctx, alpha, bravo.LANIP(), 20)
		if got < 18 {
			t.Errorf("alpha → %s: %d of 20 pings answered:\n%s", bravo.LANIP(), got, out)
		}
	})
	t.Logf("over %v: %s", m.span, m)
	if m.bytes > 4<<20 {
		t.Errorf("%d bytes on the hosts' interfaces in %v: traffic loops through the tunnel", m.bytes, m.span)
	}
	if m.err != nil {
		t.Error(m.err)
	}
	got, out := pingSeries(ctx, alpha, ag[1].OverlayIP(), 10)
	if got < 9 {
		t.Errorf("alpha → bravo overlay: %d of 10 pings answered:\n%s", got, out)
	}
}

// peerView is one agent's view of one peer.
type peerView struct {
	from, to string
	p        *PeerStatus
}

// measured is what measure saw.
type measured struct {
	span     time.Duration
	bytes    int64           // rx+tx on every agent host's eth0 and mesh interface
	cpu      []time.Duration // per agent
	paths    map[string]int  // "from→to kind type addr": samples
	err      error           // the first check failure
	switches int             // path changes seen
}

func (m measured) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%.1f MB on the interfaces, CPU", float64(m.bytes)/1e6)
	for _, c := range m.cpu {
		fmt.Fprintf(&b, " %.0f%%", 100*c.Seconds()/m.span.Seconds())
	}
	fmt.Fprintf(&b, ", %d path changes, paths seen %v", m.switches, m.paths)
	return b.String()
}

// measure runs work while sampling every agent's status every 200 ms for at
// least span, and returns the bytes the hosts' eth0 and mesh interfaces moved, the agents' CPU
// time and the paths seen; check judges every sample.
func measure(ctx context.Context, t *testing.T, ag []*Agent, span time.Duration, check func([]peerView) error, work func()) measured {
	t.Helper()
	m := measured{paths: map[string]int{}}
	bytes0, cpu0 := counters(ctx, t, ag)
	start := time.Now()
	done := make(chan struct{})
	go func() { defer close(done); work() }()
	last := map[string]string{}
	for i := 0; i < 1000; i++ { // bounded: span / 200 ms, and work's length
		var views []peerView
		for _, a := range ag {
			st, err := a.Status(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for _, b := range ag {
				if p := st.Peer(b.OverlayIP()); b != a && p != nil {
					views = append(views, peerView{from: a.Host.Name(), to: b.Host.Name(), p: p})
				}
			}
		}
		for _, v := range views {
			k := v.from + "→" + v.to
			desc := v.p.Path
			if c := v.p.RemoteCandidate; c != nil {
				desc += " " + c.Type + " " + c.Address
			}
			m.paths[k+" "+desc]++
			if prev, ok := last[k]; ok && prev != desc {
				m.switches++
			}
			last[k] = desc
		}
		if err := check(views); err != nil && m.err == nil {
			m.err = err
		}
		finished := false
		select {
		case <-done:
			finished = true
		default:
		}
		if finished && time.Since(start) >= span || !Pause(ctx, 200*time.Millisecond) {
			break
		}
	}
	<-done
	m.span = time.Since(start)
	bytes1, cpu1 := counters(ctx, t, ag)
	m.bytes = bytes1 - bytes0
	for i := range cpu1 {
		m.cpu = append(m.cpu, cpu1[i]-cpu0[i])
	}
	return m
}

// counters returns the bytes received and sent on the agents' hosts' eth0
// and mesh interfaces together, and each agent's CPU time.
func counters(ctx context.Context, t *testing.T, ag []*Agent) (int64, []time.Duration) {
	t.Helper()
	var total int64
	var cpu []time.Duration
	for _, a := range ag {
		for _, f := range []string{"eth0/statistics/rx_bytes", "eth0/statistics/tx_bytes", a.Iface + "/statistics/rx_bytes", a.Iface + "/statistics/tx_bytes"} {
			out, err := a.Host.Run(ctx, "cat", "/sys/class/net/"+f)
			if err != nil {
				t.Fatal(err)
			}
			n, err := strconv.ParseInt(strings.TrimSpace(out), 10, 64)
			if err != nil {
				t.Fatalf("%s %s %q: %v", a.Host.Name(), f, out, err)
			}
			total += n
		}
		c, err := cpuTime(a.Proc.PID)
		if err != nil {
			t.Fatal(err)
		}
		cpu = append(cpu, c)
	}
	return total, cpu
}

// cpuTime is the user and system time of process pid (USER_HZ 100).
func cpuTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: %q", pid, s)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %q", pid, s)
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: %q", pid, s)
	}
	return time.Duration(ut+st) * 10 * time.Millisecond, nil
}

// inAny reports whether the host of addr (ip:port) is in one of ps.
func inAny(addr string, ps []netip.Prefix) bool {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return false
	}
	for _, p := range ps {
		if p.Contains(ap.Addr().Unmap()) {
			return true
		}
	}
	return false
}

// TestRouteOverUnderlay routes 198.51.100.0/25, part of the lab's
// internet that holds the server, the relay and the peers' public
// addresses, through one peer while the agents run. Their own traffic
// (control, signal, relay, WireGuard to every peer) must stay on the
// underlay: the peers keep pinging each other, and deleting the route
// later still reaches them. One of them filters reverse paths strictly.
func TestRouteOverUnderlay(t *testing.T) {
	ctx := context.Background()
	l := New(t)
	alpha := l.Host("alpha", l.Router("ra", Home))
	bravo := l.Host("bravo", l.Router("rb", Home))
	charlie := l.Host("charlie", l.Router("rc", Home))
	srv, ag := startMesh(ctx, t, l, alpha, bravo, charlie)
	for _, pr := range [][2]int{{0, 1}, {0, 2}, {1, 2}} {
		connect(ctx, t, ag[pr[0]], ag[pr[1]], 30*time.Second)
	}
	l.Step("every pair pings")

	network := "198.51.100.0/25"
	under := netip.MustParsePrefix(network)
	for _, a := range []netip.Addr{srv.Host.IP(), alpha.PublicIP(), bravo.PublicIP(), charlie.PublicIP()} {
		if !under.Contains(a) {
			t.Fatalf("%v is outside %v: the route would not cover the underlay", a, under)
		}
	}
	// alpha checks reverse paths strictly, as some distributions do by
	// default: answers from the underlay must still pass.
	if _, err := alpha.Run(ctx, "sysctl", "-q", "-w", "net.ipv4.conf.all.rp_filter=1", "net.ipv4.conf.eth0.rp_filter=1"); err != nil {
		t.Fatal(err)
	}
	self, err := ag[1].Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var rt struct {
		ID string `json:"id"`
	}
	if err := srv.AdminJSON(ctx, &rt, "routes", "create", "--network", network, "--peer", self.Self.Name); err != nil {
		t.Fatal(err)
	}
	for _, i := range []int{0, 2} {
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		st, err := ag[i].WaitStatus(wctx, "the route "+network, func(st *Status) bool { return st.Route(network) != nil })
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: route %+v", ag[i].Host.Name(), *st.Route(network))
		out, err := ag[i].Host.Run(ctx, "ip", "route", "show", "table", "all", network)
		if err != nil || !strings.Contains(out, "dev "+ag[i].Iface) {
			t.Fatalf("%s routes no %s through the mesh (%v):\n%s", ag[i].Host.Name(), network, err, out)
		}
	}
	l.Step("route " + network + " via bravo reached alpha and charlie")

	// Long enough for keepalives, consent checks and the sync stream to go
	// through the route if they were going to.
	for _, pr := range [][2]int{{0, 1}, {0, 2}, {2, 1}} {
		a, b := ag[pr[0]], ag[pr[1]]
		if got, out := pingSeries(ctx, a.Host, b.OverlayIP(), 15); got < 13 {
			t.Errorf("%s → %s with the route: %d of 15 pings answered:\n%s", a.Host.Name(), b.Host.Name(), got, out)
		}
	}
	l.Step("peers still ping each other")

	if _, err := srv.Admin(ctx, "routes", "delete", rt.ID); err != nil {
		t.Fatal(err)
	}
	for _, i := range []int{0, 2} {
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_, err := ag[i].WaitStatus(wctx, "the route gone", func(st *Status) bool { return st.Route(network) == nil })
		cancel()
		if err != nil {
			t.Errorf("control no longer reaches %s: %v", ag[i].Host.Name(), err)
		}
	}
	l.Step("route deleted: control still reaches every agent")
	connect(ctx, t, ag[0], ag[2], 10*time.Second)
}
