package nftfilter

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	controlv1 "meshd/api/control/v1"
	"meshd/internal/filter"
	"meshd/internal/netnstest"
)

// The root tier: a veth pair between two namespaces the test makes stands
// in for the WireGuard interface. Namespace "self" has the filter on its
// end (kfwg0, 100.64.0.1, fd00:64::1); namespace "peers" holds alice
// (100.64.0.2, fd00:64::2) and bob (100.64.0.3) on the other end. Real
// TCP connects and pings show what passes.

// netns makes a namespace "kf-<pid>-<n>" (netnstest.New): the tests need
// ip, nft and ping.
func netns(tb testing.TB) (string, func(fn func())) {
	tb.Helper()
	return netnstest.New(tb, "kf", "nft", "ping")
}

func inNS(tb testing.TB, ns string, args ...string) (string, error) {
	tb.Helper()
	out, err := exec.Command("ip", append([]string{"netns", "exec", ns}, args...)...).CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

func mustNS(tb testing.TB, ns string, args ...string) string {
	tb.Helper()
	out, err := inNS(tb, ns, args...)
	if err != nil {
		tb.Fatalf("%s in %s: %v: %s", strings.Join(args, " "), ns, err, out)
	}
	return out
}

var (
	selfIP  = netip.MustParseAddr("100.64.0.1")
	aliceIP = netip.MustParseAddr("100.64.0.2")
	bobIP   = netip.MustParseAddr("100.64.0.3")
	self6   = netip.MustParseAddr("fd00:64::1")
	alice6  = netip.MustParseAddr("fd00:64::2")
)

const iface = "kfwg0"

type lab struct {
	self, peers     string
	doSelf, doPeers func(func())
}

func newLab(tb testing.TB) *lab {
	tb.Helper()
	l := &lab{}
	l.self, l.doSelf = netns(tb)
	l.peers, l.doPeers = netns(tb)
	mustNS(tb, l.self, "ip", "link", "add", iface, "type", "veth", "peer", "name", "kfpeer0", "netns", l.peers)
	mustNS(tb, l.self, "ip", "addr", "add", "100.64.0.1/24", "dev", iface)
	mustNS(tb, l.self, "ip", "addr", "add", "fd00:64::1/64", "dev", iface, "nodad")
	mustNS(tb, l.self, "ip", "link", "set", iface, "up")
	mustNS(tb, l.self, "ip", "link", "set", "lo", "up")
	mustNS(tb, l.peers, "ip", "addr", "add", "100.64.0.2/24", "dev", "kfpeer0")
	mustNS(tb, l.peers, "ip", "addr", "add", "100.64.0.3/24", "dev", "kfpeer0")
	mustNS(tb, l.peers, "ip", "addr", "add", "fd00:64::2/64", "dev", "kfpeer0", "nodad")
	mustNS(tb, l.peers, "ip", "link", "set", "kfpeer0", "up")
	mustNS(tb, l.peers, "ip", "link", "set", "lo", "up")
	// Static neighbours for IPv6: conntrack does not track neighbour
	// discovery, so the filter would drop it; a WireGuard interface has
	// none (it is a layer-3 point-to-point link), the veth that stands for
	// one does.
	selfMAC := mustNS(tb, l.self, "cat", "/sys/class/net/"+iface+"/address")
	peerMAC := mustNS(tb, l.peers, "cat", "/sys/class/net/kfpeer0/address")
	mustNS(tb, l.self, "ip", "-6", "neigh", "replace", alice6.String(), "lladdr", peerMAC, "nud", "permanent", "dev", iface)
	mustNS(tb, l.peers, "ip", "-6", "neigh", "replace", self6.String(), "lladdr", selfMAC, "nud", "permanent", "dev", "kfpeer0")
	return l
}

// echoServer accepts on the listeners and echoes what each conn sends
// until cleanup closes them.
func echoServer(tb testing.TB, lns ...net.Listener) {
	tb.Helper()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	for _, ln := range lns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				mu.Lock()
				conns = append(conns, c)
				mu.Unlock()
				wg.Add(1)
				go func() { defer wg.Done(); _, _ = io.Copy(c, c) }()
			}
		}()
	}
	tb.Cleanup(func() {
		for _, ln := range lns {
			ln.Close()
		}
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
}

// listen opens TCP listeners in a namespace.
func listen(tb testing.TB, do func(func()), addrs ...string) {
	tb.Helper()
	var lns []net.Listener
	do(func() {
		for _, a := range addrs {
			ln, err := net.Listen("tcp", a)
			if err != nil {
				tb.Errorf("listen %s: %v", a, err)
				return
			}
			lns = append(lns, ln)
		}
	})
	if tb.Failed() {
		for _, ln := range lns {
			ln.Close()
		}
		tb.FailNow()
	}
	echoServer(tb, lns...)
}

// deniedWait is how long a connect or ping must go unanswered to count as
// dropped; a refused connect (RST) would come back at once.
const deniedWait = 500 * time.Millisecond

// dial connects from src (in the namespace do runs in) to dst and, when
// connected, echoes a message through the conn. It returns the conn (nil
// on error), which the test closes.
func dial(tb testing.TB, do func(func()), src netip.Addr, dst netip.AddrPort) (net.Conn, error) {
	tb.Helper()
	var c net.Conn
	var err error
	do(func() {
		d := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(src, 0)), Timeout: deniedWait}
		c, err = d.Dial("tcp", dst.String())
	})
	if err != nil {
		return nil, err
	}
	if err := echo(c); err != nil {
		c.Close()
		return nil, fmt.Errorf("connected, but no echo: %w", err)
	}
	tb.Cleanup(func() { c.Close() })
	return c, nil
}

func echo(c net.Conn) error {
	msg := []byte("meshd")
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write(msg); err != nil {
		return err
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		return err
	}
	return nil
}

func wantConnect(t *testing.T, name string, do func(func()), src netip.Addr, dst netip.AddrPort) net.Conn {
	t.Helper()
	c, err := dial(t, do, src, dst)
	if err != nil {
		t.Errorf("%s: %s -> %s: %v, want a connection", name, src, dst, err)
	}
	return c
}

func wantDropped(t *testing.T, name string, do func(func()), src netip.Addr, dst netip.AddrPort) {
	t.Helper()
	c, err := dial(t, do, src, dst)
	var ne net.Error
	switch {
	case err == nil:
		c.Close()
		t.Errorf("%s: %s -> %s connected, want it dropped", name, src, dst)
	case !errors.As(err, &ne) || !ne.Timeout():
		t.Errorf("%s: %s -> %s: %v, want a timeout (dropped, not refused)", name, src, dst, err)
	}
}

func ping(tb testing.TB, ns string, src, dst netip.Addr) bool {
	tb.Helper()
	_, err := inNS(tb, ns, "ping", "-n", "-q", "-c", "1", "-W", "1", "-I", src.String(), dst.String())
	return err == nil
}

var counterValues = regexp.MustCompile(`counter packets \d+ bytes \d+`)

// listed is the table as nft lists it, counter values removed, one rule
// per line without indentation.
func listed(tb testing.TB, ns, table string) string {
	tb.Helper()
	s := mustNS(tb, ns, "nft", "list", "table", "inet", table)
	var lines []string
	for _, l := range strings.Split(counterValues.ReplaceAllString(s, "counter"), "\n") {
		lines = append(lines, strings.TrimSpace(l))
	}
	return strings.Join(lines, "\n")
}

// TestNftablesFilterWithTraffic installs the table on a veth standing for
// the WireGuard interface and shows with real connections what passes.
func TestNftablesFilterWithTraffic(t *testing.T) {
	l := newLab(t)
	listen(t, l.doSelf, ":22", ":23", ":8001", ":8002")    // self's services, v4 and v6
	listen(t, l.doPeers, "100.64.0.2:80", "100.64.0.3:80") // alice's and bob's

	var tbl *Table
	l.doSelf(func() {
		var err error
		if tbl, err = New(iface, zaptest.NewLogger(t)); err != nil {
			t.Error(err)
		}
	})
	if tbl == nil {
		t.FailNow()
	}
	t.Cleanup(func() { tbl.Close() })

	// Alice may reach ssh and 8000-8001 over TCP, and ping us; we may
	// reach bob (anything). Alice over IPv6: ssh only.
	rules := compile(t,
		in("100.64.0.2", controlv1.Protocol_PROTOCOL_TCP, 22, 22, 8000, 8001),
		in("100.64.0.2", controlv1.Protocol_PROTOCOL_ICMP),
		in("fd00:64::2", controlv1.Protocol_PROTOCOL_TCP, 22, 22),
		out("100.64.0.3", controlv1.Protocol_PROTOCOL_ALL),
	)
	if err := tbl.Apply(rules); err != nil {
		t.Fatal(err)
	}
	// What the kernel holds is what render says, rule by rule.
	got := listed(t, l.self, TableName(iface))
	for _, c := range render(iface, rules).chains {
		for _, ln := range c.lines {
			if !strings.Contains(got, "\n"+ln.String()+"\n") {
				t.Errorf("nft lists no rule %q in chain %s:\n%s", ln, c.name, got)
			}
		}
	}

	for _, st := range render(iface, rules).sets {
		got := mustNS(t, l.self, "nft", "list", "set", "inet", TableName(iface), st.name)
		for _, a := range st.elems {
			if !strings.Contains(got, a.String()) {
				t.Errorf("set %s lacks %s:\n%s", st.name, a, got)
			}
		}
	}

	ap := func(a netip.Addr, port uint16) netip.AddrPort { return netip.AddrPortFrom(a, port) }
	sshConn := wantConnect(t, "alice ssh", l.doPeers, aliceIP, ap(selfIP, 22))
	wantConnect(t, "alice 8001 (in the range)", l.doPeers, aliceIP, ap(selfIP, 8001))
	wantConnect(t, "alice ssh over IPv6", l.doPeers, alice6, ap(self6, 22))
	wantDropped(t, "alice 8002 (past the range)", l.doPeers, aliceIP, ap(selfIP, 8002))
	wantDropped(t, "alice 23", l.doPeers, aliceIP, ap(selfIP, 23))
	wantDropped(t, "alice 23 over IPv6", l.doPeers, alice6, ap(self6, 23))
	wantDropped(t, "bob ssh (no IN rule)", l.doPeers, bobIP, ap(selfIP, 22))
	wantConnect(t, "we reach bob (OUT rule; his replies pass)", l.doSelf, selfIP, ap(bobIP, 80))
	wantDropped(t, "we reach alice (no OUT rule)", l.doSelf, selfIP, ap(aliceIP, 80))
	if !ping(t, l.peers, aliceIP, selfIP) {
		t.Error("alice's ping dropped (IN icmp rule; our reply is established)")
	}
	if ping(t, l.peers, bobIP, selfIP) {
		t.Error("bob's ping answered, want it dropped")
	}
	if !ping(t, l.self, selfIP, bobIP) {
		t.Error("our ping to bob unanswered (OUT rule; the reply is established)")
	}
	if ping(t, l.self, selfIP, aliceIP) {
		t.Error("our ping to alice answered, want it dropped")
	}
	if t.Failed() {
		return
	}
	in1, out1, err := tbl.Drops()
	if err != nil || in1 == 0 || out1 == 0 {
		t.Errorf("Drops after denied flows both ways: in %d, out %d, %v; want both counted", in1, out1, err)
	}

	// A rule change: bob gets ssh, alice loses it. Alice's open connection
	// stays (conntrack knows it); her new ones are dropped.
	if err := tbl.Apply(compile(t, in("100.64.0.3", controlv1.Protocol_PROTOCOL_TCP, 22, 22))); err != nil {
		t.Fatal(err)
	}
	wantConnect(t, "bob ssh after the change", l.doPeers, bobIP, ap(selfIP, 22))
	wantDropped(t, "alice ssh after the change", l.doPeers, aliceIP, ap(selfIP, 22))
	if err := echo(sshConn); err != nil {
		t.Errorf("alice's open ssh connection broke on the rule change: %v", err)
	}
	if in2, out2, err := tbl.Drops(); err != nil || in2 <= in1 || out2 < out1 {
		t.Errorf("Drops after the rule change: in %d (was %d), out %d (was %d), %v; want them kept and alice's new drop counted", in2, in1, out2, out1, err)
	}

	// The same rules again leave the table (its counters keep counting);
	// a table someone removed comes back with them.
	same := compile(t, in("100.64.0.3", controlv1.Protocol_PROTOCOL_TCP, 22, 22))
	nonzero := regexp.MustCompile(`counter packets [1-9]`)
	if got := mustNS(t, l.self, "nft", "list", "table", "inet", TableName(iface)); !nonzero.MatchString(got) {
		t.Fatalf("no drop counted before the same rules are applied again:\n%s", got)
	}
	if err := tbl.Apply(same); err != nil {
		t.Fatal(err)
	}
	if got := mustNS(t, l.self, "nft", "list", "table", "inet", TableName(iface)); !nonzero.MatchString(got) {
		t.Errorf("the table was replaced (its counters restarted) by the same rules:\n%s", got)
	}
	mustNS(t, l.self, "nft", "delete", "table", "inet", TableName(iface))
	if err := tbl.Apply(same); err != nil {
		t.Fatal(err)
	}
	wantDropped(t, "alice ssh after the table was removed and applied again", l.doPeers, aliceIP, ap(selfIP, 22))

	// No rules: everything passes.
	if err := tbl.Apply(nil); err != nil {
		t.Fatal(err)
	}
	if got := listed(t, l.self, TableName(iface)); strings.Contains(got, "jump") || strings.Contains(got, "drop") {
		t.Errorf("accept-all table has rules:\n%s", got)
	}
	wantConnect(t, "alice 23 with no rules", l.doPeers, aliceIP, ap(selfIP, 23))

	// Rules again, then Close: the table goes and everything passes.
	if err := tbl.Apply(compile(t, in("100.64.0.3", controlv1.Protocol_PROTOCOL_UDP))); err != nil {
		t.Fatal(err)
	}
	wantDropped(t, "alice 8002 before close", l.doPeers, aliceIP, ap(selfIP, 8002))
	if err := tbl.Close(); err != nil {
		t.Fatal(err)
	}
	if got := mustNS(t, l.self, "nft", "list", "tables"); got != "" {
		t.Errorf("tables left after Close: %q", got)
	}
	wantConnect(t, "alice 8002 after close", l.doPeers, aliceIP, ap(selfIP, 8002))
	if err := tbl.Apply(nil); err == nil {
		t.Error("Apply after Close succeeded")
	}
	if err := tbl.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// addLAN puts a network behind self (10.9.0.0/24, host 10.9.0.2 in a
// namespace of its own) that self routes to, as a routing peer does.
func (l *lab) addLAN(tb testing.TB) (string, func(func())) {
	tb.Helper()
	lan, do := netns(tb)
	mustNS(tb, l.self, "ip", "link", "add", "kflan0", "type", "veth", "peer", "name", "kflan1", "netns", lan)
	mustNS(tb, l.self, "ip", "addr", "add", "10.9.0.1/24", "dev", "kflan0")
	mustNS(tb, l.self, "ip", "link", "set", "kflan0", "up")
	mustNS(tb, l.self, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
	mustNS(tb, lan, "ip", "addr", "add", "10.9.0.2/24", "dev", "kflan1")
	mustNS(tb, lan, "ip", "link", "set", "kflan1", "up")
	mustNS(tb, lan, "ip", "link", "set", "lo", "up")
	mustNS(tb, lan, "ip", "route", "add", "default", "via", "10.9.0.1")
	mustNS(tb, l.peers, "ip", "route", "add", "10.9.0.0/24", "via", "100.64.0.1")
	return lan, do
}

// TestNftablesFilterForwarded: on a routing peer, packets forwarded between
// the WireGuard interface and a LAN are judged by the same rules (the
// forward chain): IN rules by the peer's source address, OUT rules by its
// destination, and replies by conntrack.
func TestNftablesFilterForwarded(t *testing.T) {
	l := newLab(t)
	_, doLAN := l.addLAN(t)
	host := netip.MustParseAddr("10.9.0.2")
	listen(t, doLAN, ":80", ":81")
	listen(t, l.doPeers, "100.64.0.2:80", "100.64.0.3:80")

	var tbl *Table
	l.doSelf(func() {
		var err error
		if tbl, err = New(iface, zaptest.NewLogger(t)); err != nil {
			t.Error(err)
		}
	})
	if tbl == nil {
		t.FailNow()
	}
	t.Cleanup(func() { tbl.Close() })
	if err := tbl.Apply(compile(t,
		in("100.64.0.2", controlv1.Protocol_PROTOCOL_TCP, 80, 80),
		out("100.64.0.3", controlv1.Protocol_PROTOCOL_ALL),
	)); err != nil {
		t.Fatal(err)
	}
	ap := netip.AddrPortFrom
	wantConnect(t, "alice to the LAN's port 80", l.doPeers, aliceIP, ap(host, 80))
	wantDropped(t, "alice to the LAN's port 81", l.doPeers, aliceIP, ap(host, 81))
	wantDropped(t, "bob to the LAN (no IN rule)", l.doPeers, bobIP, ap(host, 80))
	wantConnect(t, "the LAN to bob (OUT rule)", doLAN, host, ap(bobIP, 80))
	wantDropped(t, "the LAN to alice (no OUT rule)", doLAN, host, ap(aliceIP, 80))
}

// BenchmarkApply replaces a table of 5000 peers (10000 specs: sets of
// 5000 addresses) in a namespace: the cost of a map change in kernel mode.
func BenchmarkApply(b *testing.B) {
	ns, do := netns(b)
	var frs []*controlv1.FirewallRule
	for i := 0; i < 5000; i++ {
		peer := fmt.Sprintf("100.64.%d.%d", 1+i/250, 1+i%250)
		frs = append(frs, in(peer, controlv1.Protocol_PROTOCOL_TCP, 22, 22, 443, 443), out(peer, controlv1.Protocol_PROTOCOL_ALL))
	}
	// Two rule sets in turn: an Apply of the installed rules does nothing.
	rules := []*filter.Rules{compile(b, frs...), compile(b, append(frs, in("100.64.99.1", controlv1.Protocol_PROTOCOL_ALL))...)}
	var tbl *Table
	do(func() {
		var err error
		if tbl, err = New(iface, nil); err != nil {
			b.Fatal(err)
		}
	})
	b.Cleanup(func() { tbl.Close() })
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := tbl.Apply(rules[i%2]); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	if got := mustNS(b, ns, "nft", "list", "set", "inet", TableName(iface), "in4_0"); !strings.Contains(got, "100.64.20.250") {
		b.Fatalf("the last peer is not in the set")
	}
}
