//go:build linux

package lab

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"runtime"
	"strings"

	"golang.org/x/sys/unix"
)

// node is one network namespace of a lab.
type node struct {
	lab  *Lab
	name string // short name given by the test ("home1")
	ns   string // namespace name ("mlab-123-1-home1")
}

// Node is a namespace of the lab: a host, a router or the internet.
type Node struct{ n *node }

// Name is the name the test gave the node.
func (n *Node) Name() string { return n.n.name }

// Namespace is the network namespace's name, for `ip netns exec`.
func (n *Node) Namespace() string { return n.n.ns }

// Run runs a command inside the namespace and returns its combined output.
func (n *Node) Run(ctx context.Context, args ...string) (string, error) { return n.n.run(ctx, args...) }

// Do calls fn on an OS thread that is inside the namespace, so that
// sockets fn opens live there (and stay there after fn returns). Only the
// calling goroutine is inside: goroutines fn starts are not.
func (n *Node) Do(fn func() error) error { return n.n.do(fn) }

// newNode creates a namespace with lo up and IPv6 off (the lab is IPv4;
// link-local IPv6 on the internet bridge would bypass the NATs).
func (l *Lab) newNode(name string) (*node, error) {
	n := &node{lab: l, name: name, ns: l.id + "-" + name}
	if len(n.ns) > 200 {
		return nil, fmt.Errorf("node name %q too long", name)
	}
	err := l.building(func() error {
		if err := l.sh("ip", "netns", "add", n.ns); err != nil {
			return err
		}
		l.mu.Lock()
		l.nodes = append(l.nodes, n)
		l.mu.Unlock()
		return nil
	})
	if err != nil {
		return nil, err
	}
	if err := n.sh("sysctl", "-q", "-w",
		"net.ipv6.conf.all.disable_ipv6=1",
		"net.ipv6.conf.default.disable_ipv6=1",
	); err != nil {
		return nil, err
	}
	if err := n.ipBatch("link set lo up"); err != nil {
		return nil, err
	}
	return n, nil
}

// sh runs a command in the root namespace (only `ip netns add` and the
// like: nothing that configures the root namespace itself).
func (l *Lab) sh(args ...string) error {
	l.record(strings.Join(args, " "))
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// sh runs a command inside the namespace.
func (n *node) sh(args ...string) error {
	_, err := n.run(context.Background(), args...)
	return err
}

func (n *node) run(ctx context.Context, args ...string) (string, error) {
	n.lab.record("[" + n.name + "] " + strings.Join(args, " "))
	full := append([]string{"netns", "exec", n.ns}, args...)
	out, err := exec.CommandContext(ctx, "ip", full...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s in %s: %v: %s", strings.Join(args, " "), n.name, err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// ipBatch runs `ip` commands (without the leading "ip") in the namespace
// in one process.
func (n *node) ipBatch(cmds ...string) error {
	for _, c := range cmds {
		n.lab.record("[" + n.name + "] ip " + c)
	}
	cmd := exec.Command("ip", "-n", n.ns, "-batch", "-")
	cmd.Stdin = strings.NewReader(strings.Join(cmds, "\n") + "\n")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip -n %s: %v: %s", n.name, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// fastARP makes ARP on ifname ask again after 100 ms instead of 1 s: a
// link just brought up sometimes loses the first request (see ready).
func (n *node) fastARP(ifname string) error {
	return n.sh("sysctl", "-q", "-w", "net.ipv4.neigh."+ifname+".retrans_time_ms=100")
}

// nft replaces the namespace's ruleset.
func (n *node) nft(ruleset string) error {
	n.lab.record("[" + n.name + "] nft -f - <<EOF\n" + ruleset + "EOF")
	cmd := exec.Command("ip", "netns", "exec", n.ns, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader("flush ruleset\n" + ruleset)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("nft in %s: %v: %s", n.name, err, strings.TrimSpace(string(out)))
	}
	return nil
}

func (n *node) do(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		// The thread enters the namespace and comes back before it is
		// unlocked. It must not be thrown away: processes started with
		// Pdeathsig (Host.Start) die when the thread that forked them exits,
		// and the runtime may fork from any thread.
		runtime.LockOSThread()
		home, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("open own namespace: %w", err)
			return
		}
		defer unix.Close(home)
		fd, err := unix.Open("/run/netns/"+n.ns, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("open namespace %s: %w", n.name, err)
			return
		}
		err = unix.Setns(fd, unix.CLONE_NEWNET)
		unix.Close(fd)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter namespace %s: %w", n.name, err)
			return
		}
		ferr := fn()
		if err := unix.Setns(home, unix.CLONE_NEWNET); err == nil {
			runtime.UnlockOSThread()
		} // else: the goroutine ends locked and the runtime discards the thread
		errc <- ferr
	}()
	return <-errc
}

// ListenUDP opens a UDP socket inside the namespace on addr ("0.0.0.0:0"
// style); the lab closes it at teardown.
func (n *Node) ListenUDP(addr netip.AddrPort) (*net.UDPConn, error) {
	var c *net.UDPConn
	err := n.Do(func() (err error) {
		c, err = net.ListenUDP("udp4", net.UDPAddrFromAddrPort(addr))
		return err
	})
	if err != nil {
		return nil, err
	}
	n.n.lab.OnClose(func() { c.Close() })
	return c, nil
}

// ListenTCP opens a TCP listener inside the namespace; the lab closes it
// at teardown.
func (n *Node) ListenTCP(addr netip.AddrPort) (*net.TCPListener, error) {
	var ln *net.TCPListener
	err := n.Do(func() (err error) {
		ln, err = net.ListenTCP("tcp4", net.TCPAddrFromAddrPort(addr))
		return err
	})
	if err != nil {
		return nil, err
	}
	n.n.lab.OnClose(func() { ln.Close() })
	return ln, nil
}

// DialTCP connects from inside the namespace.
func (n *Node) DialTCP(ctx context.Context, addr netip.AddrPort) (net.Conn, error) {
	var c net.Conn
	err := n.Do(func() (err error) {
		var d net.Dialer
		c, err = d.DialContext(ctx, "tcp4", addr.String())
		return err
	})
	return c, err
}
