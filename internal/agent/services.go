package agent

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"

	"go.uber.org/zap"

	controlv1 "meshd/api/control/v1"
	daemonv1 "meshd/api/daemon/v1"
	"meshd/internal/dns"
	"meshd/internal/routing"
	"meshd/wg"
)

// DNSOptions configure the mesh resolver the agent runs (internal/dns).
type DNSOptions struct {
	// Disabled turns the resolver off (--dns=false).
	Disabled bool
	// Listen is an extra address to answer on, e.g. 127.0.0.1:5353. In
	// netstack mode, where the overlay address exists only inside the
	// process, the resolver always answers on loopback too (127.0.0.1:0,
	// a free port, when Listen is unset) so that local programs can use it.
	Listen netip.AddrPort
	// ConfigureOS lets the agent point systemd-resolved at the resolver for
	// the mesh domain (undone on exit). roles/agent sets it; tests do not.
	ConfigureOS bool
	// System overrides the fallback resolvers (nil: those of
	// /etc/resolv.conf; empty: none, SERVFAIL instead).
	System []netip.AddrPort
	// ResolvConf, with ConfigureOS and no systemd-resolved, is the file
	// the agent writes so that the system asks the mesh resolver first
	// (internal/dns direct mode); BackupDir keeps the original meanwhile.
	// Empty: never written.
	ResolvConf, BackupDir string
}

// Route states in the status.
const (
	RouteServing     = "serving"
	RouteActive      = "active"
	RouteUnsupported = "unsupported"
	RouteError       = "error"
)

// services are the parts of a map beyond peers: the routes this machine
// serves as a routing peer (internal/routing) and the mesh resolver
// (internal/dns). One per tunnel; the tunnel's run loop calls apply, and
// teardown calls close before the device goes.
type services struct {
	log     *zap.Logger
	opts    DNSOptions
	dev     wg.Device
	overlay netip.Prefix // self's address with the overlay's length

	mu       sync.Mutex // guards what status reads
	rt       *routing.Manager
	rtErr    error
	routes   []*daemonv1.RouteStatus
	resolver *dns.Server
	osDNS    *dns.OS
	dnsSt    *daemonv1.DNSStatus
	notified bool // "cannot route here" was logged
}

func newServices(log *zap.Logger, opts DNSOptions, dev wg.Device, overlay netip.Prefix) *services {
	s := &services{log: log, opts: opts, dev: dev, overlay: overlay, dnsSt: &daemonv1.DNSStatus{Mode: "off"}}
	if opts.Disabled {
		s.dnsSt.Message = "turned off (--dns=false)"
		return s
	}
	s.startDNS()
	return s
}

// startDNS opens the resolver's listeners: the overlay address, port 53
// (in netstack mode on the netstack), and loopback where asked or needed.
func (s *services) startDNS() {
	r := dns.New(dns.Options{
		Allowed: []netip.Prefix{s.overlay.Masked()},
		System:  s.opts.System,
		Log:     s.log.Named("dns"),
	})
	at := netip.AddrPortFrom(s.overlay.Addr(), 53)
	var errs []string
	if tnet := s.dev.Net(); tnet != nil {
		pc, err := tnet.ListenUDPAddrPort(at)
		if err == nil {
			ln, lerr := tnet.ListenTCPAddrPort(at)
			if lerr != nil {
				ln = nil
				s.log.Warn("mesh DNS over TCP unavailable", zap.Error(lerr))
			}
			if ln != nil {
				err = r.Serve(pc, ln)
			} else {
				err = r.Serve(pc, nil)
			}
		}
		if err != nil {
			errs = append(errs, fmt.Sprintf("%s: %v", at, err))
		}
		if !s.opts.Listen.IsValid() {
			s.opts.Listen = netip.MustParseAddrPort("127.0.0.1:0")
		}
	} else if _, err := r.Listen(at); err != nil {
		errs = append(errs, err.Error())
	}
	if s.opts.Listen.IsValid() {
		if _, err := r.Listen(s.opts.Listen); err != nil {
			errs = append(errs, err.Error())
		}
	}
	st := &daemonv1.DNSStatus{Mode: dns.OSManual}
	for _, a := range r.Addrs() {
		st.Addresses = append(st.Addresses, a.String())
	}
	if len(errs) > 0 {
		st.Message = "cannot listen: " + strings.Join(errs, "; ")
		s.log.Error("mesh DNS: cannot listen", zap.Strings("errors", errs))
		if len(st.Addresses) == 0 {
			st.Mode = "error"
			r.Close()
			r = nil
		}
	}
	if r != nil && s.opts.ConfigureOS && s.dev.Net() == nil {
		s.osDNS = dns.NewOS(dns.OSOptions{Iface: s.dev.Name(), Log: s.log.Named("dns"),
			ResolvConf: s.opts.ResolvConf, BackupDir: s.opts.BackupDir})
	}
	s.mu.Lock()
	s.resolver, s.dnsSt = r, st
	s.mu.Unlock()
}

// apply brings routing and DNS in line with m.
func (s *services) apply(ctx context.Context, m *controlv1.NetworkMap) {
	s.applyRoutes(m)
	s.applyDNS(ctx, m)
}

func (s *services) applyRoutes(m *controlv1.NetworkMap) {
	self := m.GetSelf().GetPublicKey()
	names := make(map[string]string, len(m.GetPeers()))
	for _, p := range m.GetPeers() {
		names[p.GetPublicKey()] = p.GetName()
	}
	var serve []routing.Route
	var st []*daemonv1.RouteStatus
	for _, r := range m.GetRoutes() {
		rs := &daemonv1.RouteStatus{Network: r.GetNetwork(), ViaPublicKey: r.GetPeerPublicKey(),
			Masquerade: r.GetMasquerade(), Metric: r.GetMetric()}
		st = append(st, rs)
		if r.GetPeerPublicKey() != self || self == "" {
			rs.Via, rs.State = names[r.GetPeerPublicKey()], RouteActive
			if rs.Via == "" {
				rs.Via = shortKey(r.GetPeerPublicKey())
			}
			continue
		}
		p, err := netip.ParsePrefix(r.GetNetwork())
		if err != nil {
			rs.State, rs.Message = RouteError, fmt.Sprintf("bad network %q", r.GetNetwork())
			continue
		}
		rs.State = RouteServing
		serve = append(serve, routing.Route{Network: p, Masquerade: r.GetMasquerade()})
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(serve) > 0 && s.rt == nil && s.rtErr == nil {
		switch {
		case s.dev.Net() != nil:
			s.rtErr = errors.New("netstack mode cannot route to other networks: the overlay exists only inside this process (run with a TUN to be a routing peer)")
		default:
			s.rt, s.rtErr = routing.New(routing.Config{Iface: s.dev.Name(), Log: s.log.Named("routing")})
		}
		if s.rtErr != nil && !s.notified {
			s.notified = true
			s.log.Warn("this peer is a routing peer but cannot route here", zap.Error(s.rtErr))
		}
	}
	var applyErr error
	switch {
	case s.rt != nil:
		applyErr = s.rt.Apply(serve)
		if applyErr != nil {
			s.log.Error("routing", zap.Error(applyErr))
		}
	}
	for _, rs := range st {
		if rs.State != RouteServing {
			continue
		}
		switch {
		case s.rtErr != nil:
			rs.State, rs.Message = RouteUnsupported, s.rtErr.Error()
			if errors.Is(s.rtErr, routing.ErrUnsupported) {
				rs.Message = routing.ErrUnsupported.Error()
			}
		case applyErr != nil:
			rs.State, rs.Message = RouteError, applyErr.Error()
		}
	}
	s.routes = st
}

func (s *services) applyDNS(ctx context.Context, m *controlv1.NetworkMap) {
	s.mu.Lock()
	r, osDNS := s.resolver, s.osDNS
	s.mu.Unlock()
	if r == nil {
		return
	}
	c, err := dns.FromMap(m)
	if err != nil {
		s.log.Warn("mesh DNS: parts of the map skipped", zap.Error(err))
	}
	r.SetConfig(c)
	domain := strings.TrimSuffix(c.Domain, ".")
	example := m.GetSelf().GetDnsName()
	for _, p := range m.GetPeers() {
		if p.GetDnsName() != "" {
			example = p.GetDnsName()
			break
		}
	}
	mode, msg := dns.OSManual, ""
	if osDNS != nil && domain != "" {
		if err := osDNS.Set(ctx, s.overlay.Addr(), domain, example); err != nil {
			s.log.Warn("mesh DNS: system resolver", zap.Error(err))
			msg = err.Error()
		}
		mode = osDNS.Mode()
	} else if domain != "" {
		s.logManualOnce(r, example)
	}
	s.mu.Lock()
	s.dnsSt.Domain, s.dnsSt.Mode = domain, mode
	if msg != "" || !strings.HasPrefix(s.dnsSt.Message, "cannot listen") {
		s.dnsSt.Message = msg
	}
	s.mu.Unlock()
}

// logManualOnce says how to use the resolver when the OS is not told.
func (s *services) logManualOnce(r *dns.Server, example string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.dnsSt.Domain != "" {
		return
	}
	addrs := r.Addrs()
	if len(addrs) == 0 {
		return
	}
	a := addrs[len(addrs)-1] // loopback in netstack mode, the overlay otherwise
	port := ""
	if a.Port() != 53 {
		port = fmt.Sprintf(" -p %d", a.Port())
	}
	s.log.Info(fmt.Sprintf("mesh DNS answers on %s; the system resolver is not changed. Try: dig @%s%s %s",
		strings.Join(addrStrings(addrs), ", "), a.Addr(), port, example))
}

func addrStrings(as []netip.AddrPort) []string {
	out := make([]string, len(as))
	for i, a := range as {
		out[i] = a.String()
	}
	return out
}

// status returns the routes and the resolver for `meshd status`.
func (s *services) status() ([]*daemonv1.RouteStatus, *daemonv1.DNSStatus) {
	if s == nil {
		return nil, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	routes := slices.Clone(s.routes)
	var d *daemonv1.DNSStatus
	if s.dnsSt != nil {
		d = &daemonv1.DNSStatus{Addresses: slices.Clone(s.dnsSt.Addresses), Domain: s.dnsSt.Domain, Mode: s.dnsSt.Mode, Message: s.dnsSt.Message}
	}
	return routes, d
}

// DNSAddrs returns where the mesh resolver answers (none while the tunnel
// is down or DNS is off).
func (e *Engine) DNSAddrs() []netip.AddrPort {
	e.mu.Lock()
	t := e.tun
	e.mu.Unlock()
	if t == nil {
		return nil
	}
	t.mu.RLock()
	svc := t.svc
	t.mu.RUnlock()
	if svc == nil {
		return nil
	}
	svc.mu.Lock()
	defer svc.mu.Unlock()
	if svc.resolver == nil {
		return nil
	}
	return svc.resolver.Addrs()
}

// close removes the routing rules, undoes the OS's DNS settings and stops
// the resolver.
func (s *services) close() {
	if s == nil {
		return
	}
	s.mu.Lock()
	rt, r, osDNS := s.rt, s.resolver, s.osDNS
	s.rt, s.resolver, s.osDNS = nil, nil, nil
	s.mu.Unlock()
	if rt != nil {
		if err := rt.Close(); err != nil {
			s.log.Warn("remove routing rules", zap.Error(err))
		}
	}
	if osDNS != nil {
		osDNS.Close(context.Background())
	}
	if r != nil {
		r.Close()
	}
}

// firewallRules are the map's firewall rules plus, for every network this
// machine reaches through a routing peer, copies of the rules for that
// peer with the network in place of its address. internal/filter judges a
// packet by the address on the far side (the destination of an outgoing
// packet, the source of an incoming one); for routed traffic that address
// is in the routed network, not the routing peer's, so without these
// copies the filter would drop it. The routing peer stands for its
// networks: the policies that let this machine reach it let it reach them.
// (On the routing peer itself nothing is needed: incoming routed packets
// come from the sender's overlay address.)
func firewallRules(m *controlv1.NetworkMap) []*controlv1.FirewallRule {
	rules := m.GetFirewallRules()
	if len(rules) == 0 || len(m.GetRoutes()) == 0 {
		return rules // no rules: the filter accepts everything anyway
	}
	ipOf := make(map[string]string, len(m.GetPeers()))
	for _, p := range m.GetPeers() {
		ipOf[p.GetPublicKey()] = strings.Split(p.GetOverlayIp(), "/")[0]
	}
	byIP := make(map[string][]*controlv1.FirewallRule)
	for _, r := range rules {
		byIP[r.GetPeerIp()] = append(byIP[r.GetPeerIp()], r)
	}
	out := slices.Clone(rules)
	for _, rt := range m.GetRoutes() {
		if rt.GetPeerPublicKey() == m.GetSelf().GetPublicKey() {
			continue
		}
		for _, r := range byIP[ipOf[rt.GetPeerPublicKey()]] {
			out = append(out, &controlv1.FirewallRule{PeerIp: rt.GetNetwork(), Direction: r.GetDirection(),
				Protocol: r.GetProtocol(), Ports: r.GetPorts(), PolicyId: r.GetPolicyId()})
		}
	}
	return out
}

func shortKey(k string) string {
	if len(k) > 8 {
		return k[:8] + "…"
	}
	return k
}
