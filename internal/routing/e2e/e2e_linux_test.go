package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
	"golang.org/x/sys/unix"

	"meshd/internal/daemon"
	"meshd/internal/lab"
	"meshd/internal/testutil"
)

func TestMain(m *testing.M) { lab.Main(m) }

// status runs `meshd status --json` against an agent.
func status(ctx context.Context, tb testing.TB, a *lab.Agent) daemon.StatusJSON {
	tb.Helper()
	out, err := exec.CommandContext(ctx, lab.Binary(tb), "status", "--json", "--socket", a.Socket).Output()
	if err != nil {
		tb.Fatalf("meshd status on %s: %v", a.Host.Name(), err)
	}
	var st daemon.StatusJSON
	if err := json.Unmarshal(out, &st); err != nil {
		tb.Fatalf("meshd status: %v\n%s", err, out)
	}
	return st
}

// admin runs `meshd admin --data DIR ARGS...` on the server's host.
func admin(ctx context.Context, tb testing.TB, srv *lab.Server, args ...string) string {
	tb.Helper()
	out, err := srv.Host.Run(ctx, append([]string{lab.Binary(tb), "admin", "--data", srv.Data}, args...)...)
	if err != nil {
		tb.Fatalf("meshd admin %s: %v", strings.Join(args, " "), err)
	}
	return out
}

// resolve asks the resolver at server for name's A records from inside
// the host's namespace.
func resolve(h *lab.Host, server netip.Addr, name string) ([]string, error) {
	var out []string
	err := inNS(h, func() error {
		q := new(mdns.Msg)
		q.SetQuestion(mdns.Fqdn(name), mdns.TypeA)
		r, _, err := (&mdns.Client{Timeout: 2 * time.Second}).Exchange(q, netip.AddrPortFrom(server, 53).String())
		if err != nil {
			return err
		}
		if r.Rcode != mdns.RcodeSuccess {
			return fmt.Errorf("%s: %s", name, mdns.RcodeToString[r.Rcode])
		}
		for _, rr := range r.Answer {
			if a, ok := rr.(*mdns.A); ok {
				out = append(out, a.A.String())
			}
		}
		return nil
	})
	return out, err
}

// TestRoutesAndDNS: host a reaches 10.99.0.0/24, a network in namespace n
// behind routing peer r (masquerade), once an admin creates the route, and
// no longer once it is deleted; a resolves r's name, the custom records and
// names on a DNS server inside the routed network.
func TestRoutesAndDNS(t *testing.T) {
	if testing.Short() {
		t.Skip("lab: end-to-end with the meshd binary; skipped with -short")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	l := lab.New(t)
	lab.Binary(t)
	srv := lab.StartServer(ctx, t, l.Host("srv", nil))
	ha, hr := l.Host("a", nil), l.Host("r", nil)
	// n is the routed network: a namespace whose only way to 10.99.0.0/24
	// is a cable to r. Its default route points at the lab's internet, so
	// it cannot answer overlay addresses without r's masquerade.
	hn := l.Host("n", nil)
	if _, err := hr.Run(ctx, "ip", "link", "add", "vr0", "type", "veth", "peer", "name", "vn0", "netns", hn.Namespace()); err != nil {
		t.Fatal(err)
	}
	for _, c := range [][]string{
		{"r", "ip", "addr", "add", "10.99.0.1/24", "dev", "vr0"}, {"r", "ip", "link", "set", "vr0", "up"},
		{"n", "ip", "addr", "add", "10.99.0.2/24", "dev", "vn0"}, {"n", "ip", "link", "set", "vn0", "up"},
	} {
		h := map[string]*lab.Host{"r": hr, "n": hn}[c[0]]
		if _, err := h.Run(ctx, c[1:]...); err != nil {
			t.Fatal(err)
		}
	}
	target := netip.MustParseAddr("10.99.0.2")
	l.Step("topology")

	// No fallback resolver: the host's /etc/resolv.conf names a server
	// outside the lab.
	var agents []*lab.Agent
	for _, h := range []*lab.Host{ha, hr} {
		ag := lab.NewAgent(t, h, srv.Join)
		ag.Args = []string{"--dns-fallback", "none"}
		lab.Must(t, ag.Launch())
		agents = append(agents, ag)
	}
	for _, ag := range agents {
		lab.Must(t, ag.WaitReady(ctx))
	}
	a, r := agents[0], agents[1]
	t.Cleanup(func() {
		if t.Failed() {
			diagnose(t, a, r)
		}
	})
	if _, err := a.Host.WaitPing(ctx, r.OverlayIP(), 20*time.Second); err != nil {
		t.Fatal(err)
	}
	l.Step("a reaches r")
	if err := ha.Ping(ctx, target); err == nil {
		t.Fatal("a reaches the routed network before any route exists")
	}
	rName := status(ctx, t, r).Self.Name
	stA := status(ctx, t, a)
	if stA.DNS == nil || stA.DNS.Mode != "manual" || !slices.Contains(stA.DNS.Addresses, netip.AddrPortFrom(a.OverlayIP(), 53).String()) {
		t.Fatalf("a's dns status %+v", stA.DNS)
	}
	domain := stA.DNS.Domain

	// The route, as an admin creates it.
	admin(ctx, t, srv, "routes", "create", "--network", "10.99.0.0/24", "--peer", rName, "--masquerade")
	if _, err := ha.WaitPing(ctx, target, 20*time.Second); err != nil {
		t.Fatalf("a does not reach 10.99.0.2 through r: %v", err)
	}
	l.Step("a reaches the routed network")
	table := "meshd-" + r.Iface
	out, err := hr.Run(ctx, "nft", "list", "table", "inet", table)
	if err != nil || !strings.Contains(out, "masquerade") || !strings.Contains(out, "ip daddr 10.99.0.0/24") {
		t.Fatalf("r's table: %v\n%s", err, out)
	}
	if fwd, _ := hr.Run(ctx, "sysctl", "-n", "net.ipv4.ip_forward"); strings.TrimSpace(fwd) != "1" {
		t.Errorf("r's ip_forward %q", fwd)
	}
	// n sees r's address, not a's overlay address: masquerade.
	var ln net.Listener
	if err := inNS(hn, func() (err error) { ln, err = net.Listen("tcp4", "10.99.0.2:7070"); return err }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	accepted := make(chan netip.Addr, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr()
		c.Close()
	}()
	err = inNS(ha, func() error {
		dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		c, err := (&net.Dialer{}).DialContext(dctx, "tcp4", "10.99.0.2:7070")
		if err == nil {
			c.Close()
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case from := <-accepted:
		if from != netip.MustParseAddr("10.99.0.1") {
			t.Errorf("n saw the connection from %s, want r's 10.99.0.1 (masquerade)", from)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("n accepted no connection")
	}
	stA, stR := status(ctx, t, a), status(ctx, t, r)
	if len(stR.Routes) != 1 || stR.Routes[0].State != "serving" || stR.Routes[0].Via != "" {
		t.Errorf("r's routes %+v", stR.Routes)
	}
	if len(stA.Routes) != 1 || stA.Routes[0].State != "active" || stA.Routes[0].Via != rName {
		t.Errorf("a's routes %+v", stA.Routes)
	}

	// DNS: a's resolver (on a's overlay address) knows r; r's resolver,
	// asked through the tunnel, knows a.
	rFQDN, aFQDN := status(ctx, t, r).Self.DNSName, stA.Self.DNSName
	if got, err := resolve(ha, a.OverlayIP(), rFQDN); err != nil || !slices.Equal(got, []string{r.OverlayIP().String()}) {
		t.Errorf("a's resolver: %s = %v %v, want %s", rFQDN, got, err, r.OverlayIP())
	}
	if got, err := resolve(ha, r.OverlayIP(), aFQDN); err != nil || !slices.Equal(got, []string{a.OverlayIP().String()}) {
		t.Errorf("r's resolver through the tunnel: %s = %v %v, want %s", aFQDN, got, err, a.OverlayIP())
	}
	// A record and a nameserver group whose server sits in the routed
	// network: a's resolver reaches it through r.
	admin(ctx, t, srv, "dns", "records", "create", "--name", "files", "--type", "A", "--value", "10.99.0.2")
	startUpstream(t, hn, map[string]string{"printer.home.arpa.": "10.99.0.77"})
	admin(ctx, t, srv, "dns", "nameservers", "create", "--name", "lan", "--nameserver", "10.99.0.2", "--domain", "home.arpa")
	testutil.WaitEvery(t, 20*time.Second, 100*time.Millisecond, "answers from the record and the routed nameserver", func() bool {
		f, err1 := resolve(ha, a.OverlayIP(), "files."+domain)
		p, err2 := resolve(ha, a.OverlayIP(), "printer.home.arpa")
		return err1 == nil && err2 == nil && slices.Equal(f, []string{"10.99.0.2"}) && slices.Equal(p, []string{"10.99.0.77"})
	})
	l.Step("dns")

	// Deleting the route takes the access and r's table away.
	admin(ctx, t, srv, "routes", "delete", "10.99.0.0/24")
	testutil.WaitEvery(t, 20*time.Second, 100*time.Millisecond, "r's table removed", func() bool {
		out, err := hr.Run(ctx, "nft", "list", "tables")
		return err == nil && !strings.Contains(out, table)
	})
	if fwd, _ := hr.Run(ctx, "sysctl", "-n", "net.ipv4.ip_forward"); strings.TrimSpace(fwd) != "0" {
		t.Errorf("r's ip_forward %q after the route went, want 0 again", fwd)
	}
	testutil.WaitEvery(t, 20*time.Second, 100*time.Millisecond, "a losing the routed network", func() bool { return ha.Ping(ctx, target) != nil })
	if st := status(ctx, t, a); len(st.Routes) != 0 {
		t.Errorf("a still lists routes %+v", st.Routes)
	}
	l.Step("route deleted")

	// Stopping the routing peer's agent removes its table and restores
	// forwarding as well.
	admin(ctx, t, srv, "routes", "create", "--network", "10.99.0.0/24", "--peer", rName)
	testutil.WaitEvery(t, 20*time.Second, 100*time.Millisecond, "r's table back", func() bool {
		out, err := hr.Run(ctx, "nft", "list", "tables")
		return err == nil && strings.Contains(out, table)
	})
	if err := r.Proc.Stop(); err != nil {
		t.Logf("stop r: %v", err)
	}
	if out, _ := hr.Run(ctx, "nft", "list", "tables"); strings.Contains(out, table) {
		t.Errorf("r's table outlived its agent: %q", out)
	}
	if fwd, _ := hr.Run(ctx, "sysctl", "-n", "net.ipv4.ip_forward"); strings.TrimSpace(fwd) != "0" {
		t.Errorf("r's ip_forward %q after its agent stopped, want 0", fwd)
	}
	l.Step("routing agent stopped")
}

// inNS runs fn on an OS thread inside h's network namespace, so that the
// sockets fn opens live there, and then puts the thread back in this
// process's namespace. lab's Node.Do lets its thread die instead, and a
// dying thread kills the processes it forked with Pdeathsig (lab.Host.Start
// starts the agents so): a Do on the wrong thread kills an agent mid-test.
func inNS(h *lab.Host, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			errc <- err
			return // the thread dies locked: harmless, nothing was changed
		}
		defer unix.Close(orig)
		fd, err := unix.Open("/run/netns/"+h.Namespace(), unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		err = unix.Setns(fd, unix.CLONE_NEWNET)
		unix.Close(fd)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		err = fn()
		if unix.Setns(orig, unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread() // back home: the thread may be reused
		}
		errc <- err
	}()
	return <-errc
}

// diagnose logs the state of the hosts' routing, for a failed run.
func diagnose(tb testing.TB, agents ...*lab.Agent) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, a := range agents {
		exited, err := a.Proc.Exited()
		tb.Logf("diagnose %s: agent exited=%v (%v)", a.Host.Name(), exited, err)
		for _, c := range [][]string{
			{"ip", "-br", "addr"}, {"ip", "route"}, {"ip", "route", "get", "10.99.0.2"}, {"wg", "show", a.Iface},
			{"nft", "list", "ruleset"}, {"sysctl", "net.ipv4.ip_forward"},
		} {
			out, err := a.Host.Run(ctx, c...)
			tb.Logf("diagnose %s: %s: %v\n%s", a.Host.Name(), strings.Join(c, " "), err, out)
		}
	}
}

// startUpstream runs a DNS server on 10.99.0.2:53 inside n.
func startUpstream(tb testing.TB, n *lab.Host, answers map[string]string) {
	tb.Helper()
	var pc net.PacketConn
	if err := inNS(n, func() (err error) { pc, err = net.ListenPacket("udp4", "10.99.0.2:53"); return err }); err != nil {
		tb.Fatal(err)
	}
	h := mdns.HandlerFunc(func(w mdns.ResponseWriter, req *mdns.Msg) {
		resp := new(mdns.Msg)
		resp.SetReply(req)
		if ip, ok := answers[strings.ToLower(req.Question[0].Name)]; ok && req.Question[0].Qtype == mdns.TypeA {
			resp.Answer = append(resp.Answer, &mdns.A{Hdr: mdns.RR_Header{Name: req.Question[0].Name, Rrtype: mdns.TypeA,
				Class: mdns.ClassINET, Ttl: 30}, A: net.ParseIP(ip)})
		} else {
			resp.Rcode = mdns.RcodeNameError
		}
		w.WriteMsg(resp)
	})
	srv := &mdns.Server{PacketConn: pc, Handler: h}
	done := make(chan struct{})
	go func() { defer close(done); srv.ActivateAndServe() }()
	tb.Cleanup(func() { pc.Close(); <-done })
}
