//go:build linux

package lab

import (
	"context"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Kind is the NAT a router makes.
type Kind string

// The router kinds. Every kind masquerades its LAN (192.168.N.0/24 on
// lan0) behind its public address (on wan0) and forwards LAN-originated and
// established traffic only.
const (
	// Home is a home router: plain `masquerade` (endpoint-independent
	// mapping, source port kept when free) plus the WAN input filter every
	// home router has (policy drop; established/related and LAN accepted).
	// Two home routers punch UDP holes at once.
	Home Kind = "home"
	// Bare is Home without the input filter, a bare Linux masquerade. The
	// first unsolicited packet from a peer reaches the router's input and
	// leaves a conntrack entry, so the router's next outbound mapping to
	// that peer takes another port: towards that peer it is symmetric.
	Bare Kind = "bare"
	// Symmetric maps every destination to a new random port
	// (`masquerade random,fully-random`), with Home's input filter.
	Symmetric Kind = "symmetric"
	// UDPBlocked is Home that drops all forwarded UDP; TCP passes.
	UDPBlocked Kind = "udp-blocked"
)

// Kinds lists every router kind.
var Kinds = []Kind{Home, Bare, Symmetric, UDPBlocked}

// ruleset is the nftables ruleset of a router of kind k.
func (k Kind) ruleset() (string, error) {
	masq := "masquerade"
	forward := `iifname "lan0" accept`
	input := true
	switch k {
	case Home:
	case Bare:
		input = false
	case Symmetric:
		masq = "masquerade random,fully-random"
	case UDPBlocked:
		forward = "meta l4proto udp drop\n    " + forward
	default:
		return "", fmt.Errorf("unknown router kind %q", k)
	}
	var b strings.Builder
	fmt.Fprintf(&b, `table ip mlab {
  chain postrouting {
    type nat hook postrouting priority srcnat; policy accept;
    oifname "wan0" %s
  }
  chain forward {
    type filter hook forward priority filter; policy drop;
    ct state established,related accept
    %s
  }
`, masq, forward)
	if input {
		b.WriteString(`  chain input {
    type filter hook input priority filter; policy drop;
    ct state established,related accept
    iifname "lo" accept
    iifname "lan0" accept
  }
`)
	}
	b.WriteString("}\n")
	return b.String(), nil
}

// Router is a NAT router: wan0 on the internet, a LAN bridge lan0 with
// 192.168.N.1/24 behind it.
type Router struct {
	Node
	lab    *Lab
	kind   Kind
	public netip.Addr
	lan    netip.Prefix // 192.168.N.0/24

	mu       sync.Mutex
	nextHost int
}

// Router adds a router of the given kind to the internet.
func (l *Lab) Router(name string, kind Kind) *Router {
	l.tb.Helper()
	r, err := l.newRouter(name, kind)
	if err != nil {
		l.tb.Fatalf("lab: router %s: %v", name, err)
	}
	return r
}

func (l *Lab) newRouter(name string, kind Kind) (*Router, error) {
	rules, err := kind.ruleset()
	if err != nil {
		return nil, err
	}
	n, err := l.newNode(name)
	if err != nil {
		return nil, err
	}
	pub, err := l.allocPublic()
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	if l.nextLAN > 254 {
		l.mu.Unlock()
		return nil, fmt.Errorf("out of LANs")
	}
	lan := netip.PrefixFrom(netip.AddrFrom4([4]byte{192, 168, byte(l.nextLAN), 0}), 24)
	l.nextLAN++
	l.mu.Unlock()

	r := &Router{Node: Node{n}, lab: l, kind: kind, public: pub, lan: lan, nextHost: 2}
	// No ICMP rate limit: a router answers every unsolicited datagram that
	// reaches its input, so what the tests see does not depend on timing.
	if err := n.sh("sysctl", "-q", "-w", "net.ipv4.ip_forward=1", "net.ipv4.icmp_ratelimit=0"); err != nil {
		return nil, err
	}
	if err := l.cable(n, "wan0", pub); err != nil {
		return nil, err
	}
	if err := n.ipBatch(
		"link add lan0 type bridge",
		"addr add "+r.gateway().String()+"/24 dev lan0",
		"link set lan0 up",
	); err != nil {
		return nil, err
	}
	if err := n.fastARP("lan0"); err != nil {
		return nil, err
	}
	if err := n.nft(rules); err != nil {
		return nil, err
	}
	return r, nil
}

// cable connects n to the internet bridge with interface ifname holding
// addr, and a default route through the internet namespace.
func (l *Lab) cable(n *node, ifname string, addr netip.Addr) error {
	peer := l.linkName("v")
	if err := l.inet.ipBatch(
		fmt.Sprintf("link add %s type veth peer name %s netns %s", peer, ifname, n.ns),
		fmt.Sprintf("link set %s master br0 up", peer),
	); err != nil {
		return err
	}
	if err := n.fastARP(ifname); err != nil {
		return err
	}
	if err := n.ipBatch(
		fmt.Sprintf("addr add %s/24 dev %s", addr, ifname),
		fmt.Sprintf("link set %s up", ifname),
		"route add default via "+internetBridge.String(),
	); err != nil {
		return err
	}
	return n.ready(internetBridge)
}

// ready waits until the namespace reaches gw, its next hop: a link that
// is still coming up loses the first ARP request, and the kernel asks
// again only a second later, which a test would see as lost packets.
func (n *node) ready(gw netip.Addr) error {
	// Every 50 ms until the first answer, for up to 5 s.
	_, err := n.run(context.Background(), "ping", "-n", "-q", "-c", "1", "-i", "0.05", "-w", "5", gw.String())
	if err != nil {
		return fmt.Errorf("%s cannot reach its gateway %s: %w", n.name, gw, err)
	}
	return nil
}

// Kind is the router's current kind.
func (r *Router) Kind() Kind {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.kind
}

// PublicIP is the router's address on the internet.
func (r *Router) PublicIP() netip.Addr { return r.public }

// LAN is the network behind the router.
func (r *Router) LAN() netip.Prefix { return r.lan }

func (r *Router) gateway() netip.Addr { return r.lan.Addr().Next() }

// SetKind replaces the router's ruleset, e.g. UDPBlocked to Home to let
// UDP through. Existing conntrack entries (mappings) stay.
func (r *Router) SetKind(kind Kind) error {
	rules, err := kind.ruleset()
	if err != nil {
		return err
	}
	if err := r.n.nft(rules); err != nil {
		return err
	}
	r.mu.Lock()
	r.kind = kind
	r.mu.Unlock()
	return nil
}

func (r *Router) allocHost() (netip.Addr, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.nextHost > 254 {
		return netip.Addr{}, fmt.Errorf("router %s: out of LAN addresses", r.Name())
	}
	a := r.lan.Addr().As4()
	a[3] = byte(r.nextHost)
	r.nextHost++
	return netip.AddrFrom4(a), nil
}

// Host is a machine: a namespace with one interface, eth0, either on the
// internet (public) or on a router's LAN.
type Host struct {
	Node
	lab *Lab

	mu     sync.Mutex
	router *Router // nil: public
	addr   netip.Addr
}

// Host adds a host behind router r, or a public host on the internet when
// r is nil. Several hosts may share a router (they share its LAN).
func (l *Lab) Host(name string, r *Router) *Host {
	l.tb.Helper()
	n, err := l.newNode(name)
	if err != nil {
		l.tb.Fatalf("lab: host %s: %v", name, err)
	}
	h := &Host{Node: Node{n}, lab: l}
	if err := h.attach(r); err != nil {
		l.tb.Fatalf("lab: host %s: %v", name, err)
	}
	return h
}

func (h *Host) attach(r *Router) error {
	l := h.lab
	if r == nil {
		addr, err := l.allocPublic()
		if err != nil {
			return err
		}
		if err := l.cable(h.n, "eth0", addr); err != nil {
			return err
		}
		h.set(nil, addr)
		return nil
	}
	addr, err := r.allocHost()
	if err != nil {
		return err
	}
	peer := l.linkName("h")
	if err := r.n.ipBatch(
		fmt.Sprintf("link add %s type veth peer name eth0 netns %s", peer, h.n.ns),
		fmt.Sprintf("link set %s master lan0 up", peer),
	); err != nil {
		return err
	}
	if err := h.n.fastARP("eth0"); err != nil {
		return err
	}
	if err := h.n.ipBatch(
		fmt.Sprintf("addr add %s/24 dev eth0", addr),
		"link set eth0 up",
		"route add default via "+r.gateway().String(),
	); err != nil {
		return err
	}
	if err := h.n.ready(r.gateway()); err != nil {
		return err
	}
	h.set(r, addr)
	return nil
}

func (h *Host) set(r *Router, addr netip.Addr) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.router, h.addr = r, addr
}

// Router is the router the host is behind; nil for a public host.
func (h *Host) Router() *Router {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.router
}

// IP is the address on the host's eth0: its LAN address behind a router,
// its public address otherwise.
func (h *Host) IP() netip.Addr {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.addr
}

// LANIP is the host's address on its router's LAN; invalid for a public
// host.
func (h *Host) LANIP() netip.Addr {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.router == nil {
		return netip.Addr{}
	}
	return h.addr
}

// PublicIP is the address the internet sees: the host's own, or its
// router's.
func (h *Host) PublicIP() netip.Addr {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.router == nil {
		return h.addr
	}
	return h.router.public
}

// Move unplugs the host and plugs it in behind r (nil: the internet) with
// a new address, as a laptop that roams does. Moving to the same router
// gives the host a new LAN address. Processes and the host's other
// interfaces (a TUN) stay.
func (h *Host) Move(r *Router) error {
	if err := h.n.ipBatch("link del eth0"); err != nil {
		return fmt.Errorf("move %s: %w", h.Name(), err)
	}
	if err := h.attach(r); err != nil {
		return fmt.Errorf("move %s: %w", h.Name(), err)
	}
	return nil
}

// Ping sends one ICMP echo from the host and waits up to a second for the
// answer.
func (h *Host) Ping(ctx context.Context, addr netip.Addr) error {
	_, err := h.Run(ctx, "ping", "-n", "-q", "-c", "1", "-W", "1", addr.String())
	return err
}

// WaitPing pings addr every 50 ms until one echo is answered or timeout
// passes, and returns how long that took (to within 50 ms).
func (h *Host) WaitPing(ctx context.Context, addr netip.Addr, timeout time.Duration) (time.Duration, error) {
	start := time.Now()
	secs := max(1, int((timeout+time.Second-1)/time.Second))
	ctx, cancel := context.WithTimeout(ctx, timeout+2*time.Second)
	defer cancel()
	// -c 1 with -w: stop at the first reply, or after the deadline.
	_, err := h.Run(ctx, "ping", "-n", "-q", "-c", "1", "-i", "0.05", "-w", strconv.Itoa(secs), addr.String())
	if err != nil {
		return time.Since(start), fmt.Errorf("%s: no answer from %s within %v: %w", h.Name(), addr, timeout, err)
	}
	return time.Since(start), nil
}

// Pause waits d or until ctx ends; it reports whether ctx is still live.
// It paces polling loops, it is not used to wait for a condition.
func Pause(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
