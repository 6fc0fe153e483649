// Package routing makes this machine a routing peer: when a route in the
// network map names this peer (route.peer_public_key == self.public_key),
// the agent forwards packets between the WireGuard interface and the routed
// network. It turns on IP forwarding (IPv4, and IPv6 only for an IPv6
// network), remembering the old value and restoring it when the last route
// goes or the agent stops, and keeps one nftables table of its own,
// `inet meshd-<iface>`, holding
//
//   - a forward chain that accepts packets from the mesh interface to the
//     routed networks and drops packets from it to anywhere else (a peer
//     must not use a routing peer as a way onto other networks), and
//   - a postrouting chain that masquerades mesh traffic into the networks
//     whose route asks for it.
//
// One table per interface keeps agents in different network namespaces (or
// with different interfaces) apart, and removal is one table delete.
// Other firewalls are left alone; a forward chain elsewhere whose policy is
// drop is reported in the log, since nftables drops a packet that any base
// chain drops.
//
// Linux only (files by suffix); elsewhere New returns ErrUnsupported. Only
// internal/agent imports it; on a netstack device it does not use it, since the overlay lives inside the process and there is nothing to
// forward.
package routing

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"

	"go.uber.org/zap"
)

// ErrUnsupported: this OS cannot be a routing peer (yet).
var ErrUnsupported = errors.New("routing: acting as a routing peer is not supported on this OS")

// Sysctl keys of forwarding.
const (
	ForwardV4 = "net/ipv4/ip_forward"
	ForwardV6 = "net/ipv6/conf/all/forwarding"
)

// Route is a network this peer routes for the mesh.
type Route struct {
	Network    netip.Prefix
	Masquerade bool
}

func (r Route) String() string {
	if r.Masquerade {
		return r.Network.String() + " (masquerade)"
	}
	return r.Network.String()
}

// Config configures a Manager.
type Config struct {
	// Iface is the WireGuard interface.
	Iface string
	Log   *zap.Logger
}

// TableName is the nftables table (family inet) of an interface.
func TableName(iface string) string { return "meshd-" + iface }

// Plan is the firewall state for a set of routes: what the nftables
// backend installs, and what String renders in nft syntax for logs and
// tests.
type Plan struct {
	Table  string
	Iface  string
	Routes []Route
}

// String renders the plan as an nft script (as `nft list table` prints it,
// give or take counters).
func (p Plan) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "table inet %s {\n", p.Table)
	b.WriteString("  chain forward {\n    type filter hook forward priority filter; policy accept;\n")
	for _, r := range p.Routes {
		fmt.Fprintf(&b, "    iifname %q %s daddr %s accept\n", p.Iface, family(r.Network), r.Network)
	}
	fmt.Fprintf(&b, "    iifname %q drop\n  }\n", p.Iface)
	b.WriteString("  chain postrouting {\n    type nat hook postrouting priority srcnat; policy accept;\n")
	for _, r := range p.Routes {
		if r.Masquerade {
			fmt.Fprintf(&b, "    iifname %q oifname != %q %s daddr %s masquerade\n", p.Iface, p.Iface, family(r.Network), r.Network)
		}
	}
	b.WriteString("  }\n}\n")
	return b.String()
}

func family(p netip.Prefix) string {
	if p.Addr().Is4() {
		return "ip"
	}
	return "ip6"
}

// firewall installs plans: the nftables table on Linux, a recorder in tests.
type firewall interface {
	// Apply replaces the table with p's, atomically.
	Apply(p Plan) error
	// Remove deletes the table; no error when it does not exist.
	Remove() error
}

// sysctls reads and writes kernel settings ("net/ipv4/ip_forward").
type sysctls interface {
	Get(key string) (string, error)
	Set(key, value string) error
}

// forwarding turns sysctls on for as long as someone needs them and then
// restores the value it found. Every Manager of a process in one network
// namespace shares one (see New), so that one agent's routes going away do
// not switch forwarding off under another's.
type forwarding struct {
	sys sysctls
	log *zap.Logger

	mu   sync.Mutex
	refs map[string]int
	old  map[string]string // sysctls we changed → their old values
}

func newForwarding(sys sysctls, log *zap.Logger) *forwarding {
	return &forwarding{sys: sys, log: log, refs: map[string]int{}, old: map[string]string{}}
}

// acquire turns key on (remembering its old value) unless it is on.
func (f *forwarding) acquire(key string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.refs[key] > 0 {
		f.refs[key]++
		return nil
	}
	old, err := f.sys.Get(key)
	if err != nil {
		return fmt.Errorf("routing: read %s: %w", key, err)
	}
	if old != "1" {
		if err := f.sys.Set(key, "1"); err != nil {
			return fmt.Errorf("routing: turn on %s: %w", key, err)
		}
		f.old[key] = old
		f.log.Info("turned on IP forwarding", zap.String("sysctl", key), zap.String("was", old))
	}
	f.refs[key] = 1
	return nil
}

// release restores key as acquire found it when no one else holds it.
func (f *forwarding) release(key string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.refs[key] == 0 {
		return nil
	}
	if f.refs[key]--; f.refs[key] > 0 {
		return nil
	}
	old, ok := f.old[key]
	if !ok {
		return nil // it was on before: not ours to turn off
	}
	delete(f.old, key)
	if err := f.sys.Set(key, old); err != nil {
		return fmt.Errorf("routing: restore %s=%s: %w", key, old, err)
	}
	f.log.Info("restored IP forwarding", zap.String("sysctl", key), zap.String("value", old))
	return nil
}

// Manager keeps the machine in line with the routes it serves. Safe for
// concurrent use.
type Manager struct {
	cfg Config
	log *zap.Logger
	fw  firewall
	fwd *forwarding

	mu     sync.Mutex
	served []Route
	held   map[string]bool // forwarding sysctls this manager holds
	closed bool
}

func newManager(cfg Config, fw firewall, fwd *forwarding) *Manager {
	if cfg.Log == nil {
		cfg.Log = zap.NewNop()
	}
	return &Manager{cfg: cfg, log: cfg.Log, fw: fw, fwd: fwd, held: map[string]bool{}}
}

// Apply serves exactly routes: forwarding on for their families, the table
// replaced (removed when routes is empty), forwarding restored for a
// family no route needs any more.
func (m *Manager) Apply(routes []Route) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return errors.New("routing: manager closed")
	}
	return m.apply(routes)
}

func (m *Manager) apply(routes []Route) error {
	routes = normalize(routes)
	if slices.Equal(routes, m.served) && (len(routes) > 0 || m.served != nil) {
		return nil
	}
	need := map[string]bool{
		ForwardV4: slices.ContainsFunc(routes, func(r Route) bool { return r.Network.Addr().Is4() }),
		ForwardV6: slices.ContainsFunc(routes, func(r Route) bool { return r.Network.Addr().Is6() }),
	}
	var errs []error
	// Forwarding first, then the rules, then forwarding no longer needed.
	for _, k := range []string{ForwardV4, ForwardV6} {
		if need[k] && !m.held[k] {
			if err := m.fwd.acquire(k); err != nil {
				errs = append(errs, err)
				continue
			}
			m.held[k] = true
		}
	}
	if len(routes) == 0 {
		if err := m.fw.Remove(); err != nil {
			errs = append(errs, err)
		}
	} else {
		p := Plan{Table: TableName(m.cfg.Iface), Iface: m.cfg.Iface, Routes: routes}
		if err := m.fw.Apply(p); err != nil {
			errs = append(errs, err)
		} else {
			m.log.Debug("routing rules", zap.String("nft", p.String()))
		}
	}
	for _, k := range []string{ForwardV4, ForwardV6} {
		if !need[k] && m.held[k] {
			delete(m.held, k)
			if err := m.fwd.release(k); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if !slices.Equal(routes, m.served) {
		m.log.Info("routing for the mesh", zap.Stringers("routes", routes), zap.String("table", "inet "+TableName(m.cfg.Iface)))
	}
	m.served = routes
	if m.served == nil {
		m.served = []Route{}
	}
	return errors.Join(errs...)
}

// Served returns the routes being served.
func (m *Manager) Served() []Route {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.served)
}

// Close removes the table and restores forwarding.
func (m *Manager) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil
	}
	m.closed = true
	m.served = nil
	var errs []error
	if err := m.fw.Remove(); err != nil {
		errs = append(errs, err)
	}
	for _, k := range []string{ForwardV4, ForwardV6} {
		if m.held[k] {
			delete(m.held, k)
			if err := m.fwd.release(k); err != nil {
				errs = append(errs, err)
			}
		}
	}
	m.served = []Route{}
	return errors.Join(errs...)
}

// normalize masks, sorts and deduplicates routes (masquerade wins when a
// network appears twice).
func normalize(routes []Route) []Route {
	var out []Route
	for _, r := range routes {
		if !r.Network.IsValid() {
			continue
		}
		r.Network = r.Network.Masked()
		if i := slices.IndexFunc(out, func(o Route) bool { return o.Network == r.Network }); i >= 0 {
			out[i].Masquerade = out[i].Masquerade || r.Masquerade
			continue
		}
		out = append(out, r)
	}
	slices.SortFunc(out, func(a, b Route) int {
		if c := a.Network.Addr().Compare(b.Network.Addr()); c != 0 {
			return c
		}
		return a.Network.Bits() - b.Network.Bits()
	})
	return out
}
