//go:build linux

package lab

import (
	"context"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestMain(m *testing.M) { Main(m) }

// rootState is what the root namespace looks like to `ip`: the lab must not
// change it.
func rootState(t *testing.T) string {
	t.Helper()
	var b strings.Builder
	for _, args := range [][]string{{"-br", "addr"}, {"route"}, {"-br", "link"}} {
		out, err := exec.Command("ip", args...).CombinedOutput()
		if err != nil {
			t.Fatalf("ip %v: %v: %s", args, err, out)
		}
		b.Write(out)
	}
	return b.String()
}

func labNamespaces(t *testing.T, id string) []string {
	t.Helper()
	entries, _ := os.ReadDir("/run/netns")
	var ns []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), id+"-") {
			ns = append(ns, e.Name())
		}
	}
	return ns
}

// TestTopology builds hosts behind every router kind, checks who reaches
// whom, and that teardown leaves neither namespaces nor a trace in the
// root namespace.
func TestTopology(t *testing.T) {
	SkipUnlessRoot(t)
	before := rootState(t)
	ctx := context.Background()

	l := New(t)
	pub := l.Host("pub", nil)
	home := l.Router("rhome", Home)
	a := l.Host("a", home)
	b := l.Host("b", home)
	routers := map[Kind]*Router{Home: home}
	hosts := map[Kind]*Host{Home: a}
	for _, k := range []Kind{Bare, Symmetric, UDPBlocked} {
		routers[k] = l.Router("r"+string(k), k)
		hosts[k] = l.Host(string(k), routers[k])
	}
	l.Step("build")
	if got := len(labNamespaces(t, l.ID())); got != 11 {
		t.Fatalf("lab made %d namespaces, want 11 (internet, public host, 4 routers, 5 hosts):\n%s", got, l.Script())
	}

	// Every host reaches the public host and the other host on its LAN;
	// nobody reaches a LAN address from outside.
	for k, h := range hosts {
		if err := h.Ping(ctx, pub.IP()); err != nil {
			t.Errorf("%s host cannot ping the public host: %v", k, err)
		}
		if !h.LANIP().IsValid() || h.PublicIP() != routers[k].PublicIP() {
			t.Errorf("%s host: LAN %v public %v, want a LAN address and its router's %v", k, h.LANIP(), h.PublicIP(), routers[k].PublicIP())
		}
	}
	if err := a.Ping(ctx, b.IP()); err != nil {
		t.Errorf("hosts on one LAN cannot ping each other: %v", err)
	}
	if err := pub.Ping(ctx, a.IP()); err == nil {
		t.Errorf("public host reached LAN address %v", a.IP())
	}
	if err := hosts[Bare].Ping(ctx, a.IP()); err == nil {
		t.Errorf("a host behind another router reached LAN address %v", a.IP())
	}
	if d, err := a.WaitPing(ctx, pub.IP(), 5*time.Second); err != nil || d > 2*time.Second {
		t.Errorf("WaitPing a → pub: %v after %v", err, d)
	}
	if d, err := pub.WaitPing(ctx, a.IP(), time.Second); err == nil || d > 4*time.Second {
		t.Errorf("WaitPing pub → a's LAN address: %v after %v, want a failure after about 1 s", err, d)
	}
	if pub.LANIP().IsValid() || pub.PublicIP() != pub.IP() {
		t.Errorf("public host: LAN %v public %v ip %v", pub.LANIP(), pub.PublicIP(), pub.IP())
	}

	// A process runs in the host's namespace and its own hostname.
	p, err := a.Start("probe", "sh", "-c", "hostname; ip -br addr show eth0; exec sleep 60")
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := p.WaitOutput(wctx, regexp.MustCompile(`(?s)^a\n.*eth0\S* .*`+regexp.QuoteMeta(a.IP().String()))); err != nil {
		t.Fatalf("process not inside host a: %v", err)
	}

	if rss, err := p.RSS(); err != nil || rss <= 0 {
		t.Errorf("RSS of the probe: %d %v", rss, err)
	}

	l.Close()
	if exited, _ := p.Exited(); !exited {
		t.Errorf("process %d still runs after Close", p.PID)
	}
	if ns := labNamespaces(t, l.ID()); len(ns) != 0 {
		t.Errorf("namespaces left after Close: %v", ns)
	}
	if after := rootState(t); after != before {
		t.Errorf("root namespace changed:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

// TestMove roams a host to another router and to another address on the
// same one.
func TestMove(t *testing.T) {
	ctx := context.Background()
	l := New(t)
	pub := l.Host("pub", nil)
	r1 := l.Router("r1", Home)
	r2 := l.Router("r2", Bare)
	h := l.Host("h", r1)
	first := h.IP()
	if err := h.Move(r2); err != nil {
		t.Fatal(err)
	}
	if !r2.LAN().Contains(h.IP()) || h.PublicIP() != r2.PublicIP() {
		t.Fatalf("after moving to r2: ip %v public %v", h.IP(), h.PublicIP())
	}
	if err := h.Ping(ctx, pub.IP()); err != nil {
		t.Fatalf("after moving to r2: %v", err)
	}
	if err := h.Move(r1); err != nil {
		t.Fatal(err)
	}
	if h.IP() == first || !r1.LAN().Contains(h.IP()) {
		t.Fatalf("back behind r1 with %v, want a new address in %v (was %v)", h.IP(), r1.LAN(), first)
	}
	if err := h.Ping(ctx, pub.IP()); err != nil {
		t.Fatalf("back behind r1: %v", err)
	}
	if err := h.Move(nil); err != nil {
		t.Fatal(err)
	}
	if h.LANIP().IsValid() || h.PublicIP() != h.IP() {
		t.Fatalf("public: ip %v", h.IP())
	}
	if err := h.Ping(ctx, pub.IP()); err != nil {
		t.Fatalf("on the internet: %v", err)
	}
}

// TestSweep removes namespaces of a dead test process and leaves live ones.
func TestSweep(t *testing.T) {
	SkipUnlessRoot(t)
	// A process that has exited: its PID is free (reuse within this test is
	// not a concern: the sweep only looks at PIDs that are not alive).
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	pid := dead.ProcessState.Pid()
	stale := Prefix + strconv.Itoa(pid) + "-1-x"
	mine := Prefix + strconv.Itoa(os.Getpid()) + "-999-x"
	for _, ns := range []string{stale, mine} {
		if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		t.Cleanup(func() { removeNamespace(ns) })
	}
	var logged []string
	Sweep(func(f string, a ...any) { logged = append(logged, f) })
	if _, err := os.Stat("/run/netns/" + stale); err == nil {
		t.Errorf("sweep left %s of dead pid %d", stale, pid)
	}
	if _, err := os.Stat("/run/netns/" + mine); err != nil {
		t.Errorf("sweep removed %s of a live process", mine)
	}
	if len(logged) == 0 {
		t.Errorf("sweep said nothing")
	}
}
