package wg

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"meshd/internal/keys"
	"meshd/internal/testutil"
)

// requireRoot skips tests that need root, a TUN device and iproute2.
func requireRoot(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("needs root")
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		tb.Skip("no /dev/net/tun")
	}
	for _, bin := range []string{"ip", "wg", "ping"} {
		if _, err := exec.LookPath(bin); err != nil {
			tb.Skipf("no %s", bin)
		}
	}
}

func run(tb testing.TB, name string, args ...string) string {
	tb.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		tb.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// netnsPair makes two namespaces joined by a veth (10.77.0.1/24 and
// 10.77.0.2/24), removed when the test ends.
func netnsPair(tb testing.TB) (a, b string) {
	tb.Helper()
	id := fmt.Sprintf("mwg%d", os.Getpid()%100000)
	a, b = id+"a", id+"b"
	for _, ns := range []string{a, b} {
		run(tb, "ip", "netns", "add", ns)
		tb.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
		run(tb, "ip", "-n", ns, "link", "set", "lo", "up")
	}
	run(tb, "ip", "link", "add", "veth0", "netns", a, "type", "veth", "peer", "name", "veth0", "netns", b)
	for i, ns := range []string{a, b} {
		run(tb, "ip", "-n", ns, "addr", "add", fmt.Sprintf("10.77.0.%d/24", i+1), "dev", "veth0")
		run(tb, "ip", "-n", ns, "link", "set", "veth0", "up")
	}
	return a, b
}

// helperProc is a device running in a namespace (see helper_test.go).
type helperProc struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   *bufio.Scanner
}

func startHelper(tb testing.TB, ns string, hc helperConfig) (*helperProc, string) {
	tb.Helper()
	js, err := json.Marshal(hc)
	if err != nil {
		tb.Fatal(err)
	}
	cmd := exec.Command("ip", "netns", "exec", ns, os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"="+string(js))
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	must(tb, err)
	stdout, err := cmd.StdoutPipe()
	must(tb, err)
	must(tb, cmd.Start())
	h := &helperProc{cmd: cmd, stdin: stdin, out: bufio.NewScanner(stdout)}
	tb.Cleanup(func() {
		h.stdin.Close()
		done := make(chan struct{})
		go func() { h.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			h.cmd.Process.Kill()
			<-done
		}
	})
	return h, h.line(tb)
}

// line returns the helper's next line of output, failing after 20 s.
func (h *helperProc) line(tb testing.TB) string {
	tb.Helper()
	got := make(chan string, 1)
	go func() {
		if h.out.Scan() {
			got <- h.out.Text()
		} else {
			got <- "EOF"
		}
	}()
	select {
	case l := <-got:
		return l
	case <-time.After(20 * time.Second):
		tb.Fatal("helper said nothing for 20 s")
		return ""
	}
}

// TestUserspaceInNamespaces runs two userspace devices on real TUNs in two
// namespaces joined by a veth: ping and TCP through the tunnel, `wg show`,
// routes for allowed IPs outside the overlay, a clean Close, and a clear
// error when an interface name (UAPI socket) is taken.
func TestUserspaceInNamespaces(t *testing.T) {
	requireRoot(t)
	nsA, nsB := netnsPair(t)
	privA, _ := keys.Generate()
	privB, _ := keys.Generate()
	ifA := fmt.Sprintf("mwt%da", os.Getpid()%100000)
	ifB := fmt.Sprintf("mwt%db", os.Getpid()%100000)

	// A runs in auto mode, which is userspace WireGuard.
	ha, ready := startHelper(t, nsA, helperConfig{
		Mode: ModeAuto, Name: ifA, Key: privA.String(), Addr: "100.64.0.1/16", Port: 51820,
		Peers: []helperPeer{{Key: privB.Public().String(), Allowed: []string{"100.64.0.2/32", "10.200.2.0/24"}, Endpoint: "10.77.0.2:51820"}},
	})
	if ready != "ready "+ifA+" 51820" {
		t.Fatalf("helper A: %s", ready)
	}
	_, ready = startHelper(t, nsB, helperConfig{
		Name: ifB, Key: privB.String(), Addr: "100.64.0.2/16", Port: 51820, Echo: "100.64.0.2:7",
		Peers: []helperPeer{{Key: privA.Public().String(), Allowed: []string{"100.64.0.1/32"}, Endpoint: "10.77.0.1:51820"}},
	})
	if ready != "ready "+ifB+" 51820" {
		t.Fatalf("helper B: %s", ready)
	}

	run(t, "ip", "netns", "exec", nsA, "ping", "-c", "3", "-i", "0.2", "-W", "5", "100.64.0.2")
	echo := run(t, "ip", "netns", "exec", nsA, "bash", "-c",
		"exec 3<>/dev/tcp/100.64.0.2/7; echo meshd-through-the-tunnel >&3; head -n1 <&3")
	if strings.TrimSpace(echo) != "meshd-through-the-tunnel" {
		t.Fatalf("TCP echo through the tunnel: %q", echo)
	}

	show := run(t, "wg", "show", ifA)
	endpoint := "endpoint: 10.77.0.2:51820"
	if strings.Contains(run(t, "ip", "-n", nsA, "-d", "link", "show", ifA), "wireguard") {
		endpoint = "endpoint: 127.0.0.1:" // kernel mode: the peer's proxy
	}
	for _, want := range []string{
		"peer: " + privB.Public().String(),
		endpoint,
		"allowed ips: 100.64.0.2/32, 10.200.2.0/24",
		"latest handshake:",
		"listening port: 51820",
	} {
		if !strings.Contains(show, want) {
			t.Errorf("wg show %s lacks %q:\n%s", ifA, want, show)
		}
	}
	// The overlay is the interface's own route (main table); a peer's
	// other allowed IPs go into the mesh's table, which the agent's marked
	// sockets skip (policy routing).
	routes := run(t, "ip", "-n", nsA, "route", "show", "dev", ifA)
	if strings.Contains(routes, "10.200.2.0/24") || !strings.Contains(routes, "100.64.0.0/16") {
		t.Fatalf("main table routes on %s:\n%s", ifA, routes)
	}
	if table := run(t, "ip", "-n", nsA, "route", "show", "table", "51820", "dev", ifA); !strings.Contains(table, "10.200.2.0/24") {
		t.Fatalf("table 51820 routes on %s:\n%s", ifA, table)
	}
	if rules := run(t, "ip", "-n", nsA, "rule", "show"); !strings.Contains(rules, "5182:\tnot from all fwmark 0x510000/0xff0000 lookup 51820") {
		t.Fatalf("no policy rule for the mesh's table:\n%s", rules)
	}
	if nft := run(t, "ip", "netns", "exec", nsA, "nft", "list", "table", "inet", "meshd-fwmark"); !strings.Contains(nft, "meta mark set") || !strings.Contains(nft, "ct mark set") {
		t.Fatalf("no table keeping the agent's mark for answers:\n%s", nft)
	}
	if mtu := run(t, "ip", "-n", nsA, "link", "show", ifA); !strings.Contains(mtu, "mtu 1280") {
		t.Fatalf("link: %s", mtu)
	}

	// A third pair of devices over a relayed path (a connected UDP socket
	// standing in for the relay): ping, and `wg show` prints the relay's
	// address.
	ifC := fmt.Sprintf("mwt%dc", os.Getpid()%100000)
	ifD := fmt.Sprintf("mwt%dd", os.Getpid()%100000)
	_, ready = startHelper(t, nsA, helperConfig{
		Name: ifC, Key: privA.String(), Addr: "100.65.0.1/16", Port: 51830,
		Peers: []helperPeer{{Key: privB.Public().String(), Allowed: []string{"100.65.0.2/32"}, Relay: "10.77.0.1:3478>10.77.0.2:3478"}},
	})
	if ready != "ready "+ifC+" 51830" {
		t.Fatalf("helper C: %s", ready)
	}
	_, ready = startHelper(t, nsB, helperConfig{
		Name: ifD, Key: privB.String(), Addr: "100.65.0.2/16", Port: 51830,
		Peers: []helperPeer{{Key: privA.Public().String(), Allowed: []string{"100.65.0.1/32"}, Relay: "10.77.0.2:3478>10.77.0.1:3478"}},
	})
	if ready != "ready "+ifD+" 51830" {
		t.Fatalf("helper D: %s", ready)
	}
	run(t, "ip", "netns", "exec", nsA, "ping", "-c", "3", "-i", "0.2", "-W", "5", "100.65.0.2")
	if show := run(t, "wg", "show", ifC); !strings.Contains(show, "endpoint: [100::1]:0") || !strings.Contains(show, "latest handshake:") {
		t.Fatalf("wg show %s on a relayed path:\n%s", ifC, show)
	}

	// The UAPI socket is per name on the shared file system: a second
	// device called like A (in B's namespace) must fail clearly.
	_, dup := startHelper(t, nsB, helperConfig{Name: ifA, Key: privB.String(), Addr: "100.64.0.9/16", Port: 51821})
	if !strings.Contains(dup, "--iface") {
		t.Fatalf("duplicate interface name: got %q, want an error naming --iface", dup)
	}

	ha.stdin.Close()
	if l := ha.line(t); l != "closed" {
		t.Fatalf("helper A on close: %s", l)
	}
	if out, err := exec.Command("ip", "-n", nsA, "link", "show", ifA).CombinedOutput(); err == nil {
		t.Fatalf("%s still exists after Close:\n%s", ifA, out)
	}
	if r := run(t, "ip", "-n", nsA, "route"); strings.Contains(r, "10.200.2.0") {
		t.Fatalf("route left after Close:\n%s", r)
	}
	if _, err := os.Stat("/var/run/wireguard/" + ifA + ".sock"); err == nil {
		t.Fatal("UAPI socket left after Close")
	}
}

// TestUserspaceFilterInNamespaces enforces firewall rules on a real TUN
// with its offloads: wireguard-go reads TSO super-packets split into
// segments and writes segments that the TUN coalesces (GRO), and the
// filter must judge each one. b lets a in on TCP 5201 only: bulk TCP both
// ways passes (iperf3, and -R for the answers to a's connection), ping and
// TCP 22 do not.
func TestUserspaceFilterInNamespaces(t *testing.T) {
	requireRoot(t)
	for _, bin := range []string{"iperf3", "timeout"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("no %s", bin)
		}
	}
	nsA, nsB := netnsPair(t)
	privA, _ := keys.Generate()
	privB, _ := keys.Generate()
	ifA := fmt.Sprintf("mwf%da", os.Getpid()%100000)
	ifB := fmt.Sprintf("mwf%db", os.Getpid()%100000)
	_, ready := startHelper(t, nsA, helperConfig{
		Name: ifA, Key: privA.String(), Addr: "100.64.0.1/16", Port: 51820,
		Peers: []helperPeer{{Key: privB.Public().String(), Allowed: []string{"100.64.0.2/32"}, Endpoint: "10.77.0.2:51820"}},
	})
	if ready != "ready "+ifA+" 51820" {
		t.Fatalf("helper A: %s", ready)
	}
	_, ready = startHelper(t, nsB, helperConfig{
		Name: ifB, Key: privB.String(), Addr: "100.64.0.2/16", Port: 51820, AllowTCP: []uint32{5201},
		Peers: []helperPeer{{Key: privA.Public().String(), Allowed: []string{"100.64.0.1/32"}, Endpoint: "10.77.0.1:51820"}},
	})
	if ready != "ready "+ifB+" 51820" {
		t.Fatalf("helper B: %s", ready)
	}
	srv := exec.Command("ip", "netns", "exec", nsB, "iperf3", "-s", "-B", "100.64.0.2")
	must(t, srv.Start())
	t.Cleanup(func() { srv.Process.Kill(); srv.Wait() })

	for _, reverse := range []bool{false, true} {
		args := []string{"netns", "exec", nsA, "iperf3", "-c", "100.64.0.2", "-t", "1", "-J"}
		if reverse {
			args = append(args, "-R")
		}
		var out []byte
		var err error
		var res struct {
			End struct {
				SumReceived struct {
					Bytes int64 `json:"bytes"`
				} `json:"sum_received"`
			} `json:"end"`
		}
		// Until the server listens and runs a test (a client that meets it
		// starting up, or still busy with the last one, gets no bytes).
		if testutil.Poll(10*time.Second, func() bool {
			out, err = exec.Command("ip", args...).CombinedOutput()
			return err == nil && json.Unmarshal(out, &res) == nil && res.End.SumReceived.Bytes > 0
		}) != nil && err != nil {
			t.Fatalf("iperf3 (reverse %v) through the filter: %v\n%s", reverse, err, out)
		}
		if res.End.SumReceived.Bytes < 1<<20 {
			t.Fatalf("iperf3 (reverse %v) moved %d bytes through the filter", reverse, res.End.SumReceived.Bytes)
		}
	}
	if out, err := exec.Command("ip", "netns", "exec", nsA, "ping", "-c", "2", "-i", "0.2", "-W", "1", "100.64.0.2").CombinedOutput(); err == nil {
		t.Fatalf("ping passed a TCP-5201-only filter:\n%s", out)
	}
	// Nothing listens on 22: a SYN that got through would be refused at
	// once (exit 1); a dropped one times out (exit 124).
	err := exec.Command("ip", "netns", "exec", nsA, "timeout", "2", "bash", "-c", "exec 3<>/dev/tcp/100.64.0.2/22").Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 124 {
		t.Fatalf("TCP to port 22: %v, want a timeout (the filter drops the SYN)", err)
	}
}
