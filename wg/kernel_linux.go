package wg

// Kernel mode. UNTESTED on the machine it was written on (it has no
// wireguard module); it compiles, and is kept small so that it can be read
// for correctness.
//
// Kernel WireGuard owns its UDP socket, so the one-socket trick cannot
// apply. As NetBird's kernel mode does, every peer gets a tiny userspace
// proxy: a UDP socket on 127.0.0.1 that is the kernel peer's endpoint. The
// path to the peer is a bind.Bind of ours (the socket ICE uses, with the same
// STUN demultiplexing and relayed paths as in userspace mode):
//
//	kernel ──► proxy socket (127.0.0.1:P) ──► bind.Send(direct addr | relay)
//	kernel ◄── proxy socket ◄── bind receive (source addr or relay ⇒ peer)
//
// A direct packet is matched to its peer by its source address (the one
// SetDirect gave), a relayed one by its relay. The kernel only ever sees the
// proxy's address, so its roaming never moves a peer off the path.
//
// The firewall rules: packets never pass through this process, so
// Config.Filter cannot judge them. The same compiled rules become an
// nftables table on the interface (internal/filter/nftfilter), installed
// before the link exists, replaced by SetFirewall and deleted after the link
// on Close (that part is tested on a veth in nftfilter's root tests).

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"go.uber.org/zap"
	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/tun/netstack"
	"golang.zx2c4.com/wireguard/wgctrl"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"meshd/internal/filter"
	"meshd/internal/filter/nftfilter"
	"meshd/internal/fwmark"
	"meshd/internal/keys"
	"meshd/wg/bind"
)

// firewall is what the kernel device needs of nftfilter.Table.
type firewall interface {
	Apply(*filter.Rules) error
	Drops() (in, out uint64, err error)
	Close() error
}

var _ firewall = (*nftfilter.Table)(nil)

// kernelFirewall installs the table that enforces cfg.Filter's rules on the
// interface (accept-all when cfg.Filter is nil). It fails, wrapping
// ErrNoFirewall, when cfg.Filter's rules cannot be enforced; with no
// Filter, a table that cannot be installed is only logged (nil, nil).
func kernelFirewall(cfg Config) (firewall, error) {
	var rules *filter.Rules
	if cfg.Filter != nil {
		rf, ok := cfg.Filter.(describedFilter)
		if !ok {
			return nil, fmt.Errorf("%w: the packet filter %T cannot be expressed as nftables rules (use --wg-mode userspace)", ErrNoFirewall, cfg.Filter)
		}
		rules = rf.Rules()
	}
	t, err := nftfilter.New(cfg.Name, cfg.Log)
	if err == nil {
		if err = t.Apply(rules); err != nil {
			t.Close()
		}
	}
	if err != nil {
		if cfg.Filter == nil {
			cfg.Log.Warn("no nftables table for the interface; SetFirewall will fail", zap.Error(err))
			return nil, nil
		}
		return nil, fmt.Errorf("%w: %v", ErrNoFirewall, err)
	}
	return t, nil
}

type kernelDevice struct {
	name   string
	log    *zap.Logger
	fw     firewall // nil when none could be installed (and none was asked for)
	wgc    *wgctrl.Client
	link   netlink.Link
	bind   *bind.Bind
	kernel *net.UDPAddr // the kernel's own socket, as the proxies reach it
	routes *routeSet
	wg     sync.WaitGroup

	mu     sync.Mutex
	closed bool
	peers  map[keys.Key]*kpeer
	byAddr map[netip.AddrPort]*kpeer
	relays map[*bind.RelayEndpoint]*kpeer

	// The firewall's drop counters as Counters last read them.
	dropsMu           sync.Mutex
	dropsAt           time.Time
	dropsIn, dropsOut uint64
}

var (
	_ Device         = (*kernelDevice)(nil)
	_ FirewallDevice = (*kernelDevice)(nil)
)

type kpeer struct {
	cfg    Peer
	proxy  *net.UDPConn  // the kernel peer's endpoint
	out    conn.Endpoint // where the proxy sends: direct or relay; nil before a path is set
	direct netip.AddrPort
	relay  *bind.RelayEndpoint
}

func newKernel(_ context.Context, cfg Config) (Device, error) {
	// The table first: the interface never exists without its rules (they
	// match it by name).
	fw, err := kernelFirewall(cfg)
	if err != nil {
		return nil, err
	}
	la := netlink.NewLinkAttrs()
	la.Name, la.MTU = cfg.Name, cfg.MTU
	link := &netlink.Wireguard{LinkAttrs: la}
	if err := netlink.LinkAdd(link); err != nil {
		if fw != nil {
			fw.Close()
		}
		return nil, fmt.Errorf("%w: kernel WireGuard link %s: %v", ErrUnsupported, cfg.Name, err)
	}
	d := &kernelDevice{
		name: cfg.Name, log: cfg.Log, link: link, fw: fw,
		peers:  make(map[keys.Key]*kpeer),
		byAddr: make(map[netip.AddrPort]*kpeer),
		relays: make(map[*bind.RelayEndpoint]*kpeer),
	}
	fail := func(err error) (Device, error) {
		d.Close()
		return nil, err
	}
	if d.wgc, err = wgctrl.New(); err != nil {
		return fail(fmt.Errorf("wg: wgctrl: %w", err))
	}
	pk := wgtypes.Key(*cfg.PrivateKey.Bytes())
	zero := 0
	if err := d.wgc.ConfigureDevice(cfg.Name, wgtypes.Config{PrivateKey: &pk, ListenPort: &zero}); err != nil {
		return fail(fmt.Errorf("wg: configure %s: %w", cfg.Name, err))
	}
	kd, err := d.wgc.Device(cfg.Name)
	if err != nil {
		return fail(fmt.Errorf("wg: read %s: %w", cfg.Name, err))
	}
	d.kernel = &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: kd.ListenPort}
	if err := netlink.AddrAdd(link, &netlink.Addr{IPNet: prefixNet(cfg.Address)}); err != nil {
		return fail(fmt.Errorf("wg: add address %s to %s: %w", cfg.Address, cfg.Name, err))
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fail(fmt.Errorf("wg: set %s up: %w", cfg.Name, err))
	}
	d.routes = newRouteSet(newLinkRoutes(link.Attrs().Index, cfg.Name, cfg.Log), cfg.Address)

	d.bind = bind.New(bind.Options{MaxPacket: cfg.MTU + 128, Log: cfg.Log.Named("bind")})
	fns, _, err := d.bind.Open(cfg.ListenPort)
	if err != nil {
		return fail(fmt.Errorf("wg: listen on UDP port %d: %w", cfg.ListenPort, err))
	}
	// The kernel talks to the bind over loopback only; the bind's socket
	// is what reaches peers, and it bypasses the mesh's routes.
	if err := d.bind.SetMark(fwmark.Mark); err != nil {
		cfg.Log.Warn("cannot mark the WireGuard socket", zap.Error(err))
	}
	for _, fn := range fns {
		d.wg.Add(1)
		go d.receive(fn)
	}
	return d, nil
}

// SetFirewall replaces the nftables rules on the interface.
func (d *kernelDevice) SetFirewall(r *filter.Rules) error {
	d.mu.Lock()
	closed, fw := d.closed, d.fw
	d.mu.Unlock()
	switch {
	case closed:
		return ErrClosed
	case fw == nil:
		return fmt.Errorf("%w: no nftables table on %s (see the log from its start)", ErrNoFirewall, d.name)
	}
	if err := fw.Apply(r); err != nil {
		return fmt.Errorf("%w: %v", ErrNoFirewall, err)
	}
	return nil
}

// receive hands what the bind receives to the kernel through the proxy of
// the peer it comes from; packets from unknown sources are dropped.
func (d *kernelDevice) receive(fn conn.ReceiveFunc) {
	defer d.wg.Done()
	n := d.bind.BatchSize()
	bufs, sizes, eps := make([][]byte, n), make([]int, n), make([]conn.Endpoint, n)
	for i := range bufs {
		bufs[i] = make([]byte, 1<<16-1)
	}
	for {
		count, err := fn(bufs, sizes, eps)
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			d.log.Debug("kernel proxy receive", zap.Error(err))
			time.Sleep(10 * time.Millisecond) // a transient socket error; do not spin
			continue
		}
		for i := 0; i < count; i++ {
			if sizes[i] == 0 {
				continue
			}
			d.mu.Lock()
			var p *kpeer
			switch ep := eps[i].(type) {
			case *bind.RelayEndpoint:
				p = d.relays[ep]
			case *conn.StdNetEndpoint:
				p = d.byAddr[netip.AddrPortFrom(ep.Addr().Unmap(), ep.Port())]
			}
			d.mu.Unlock()
			if p != nil {
				_, _ = p.proxy.WriteToUDP(bufs[i][:sizes[i]], d.kernel)
			}
		}
	}
}

// forward sends what the kernel sends to p's proxy along p's path.
func (d *kernelDevice) forward(p *kpeer) {
	defer d.wg.Done()
	buf := make([]byte, 1<<16-1)
	for {
		n, err := p.proxy.Read(buf)
		if err != nil {
			return // closed by RemovePeer or Close
		}
		d.mu.Lock()
		out := p.out
		d.mu.Unlock()
		if out != nil {
			_ = d.bind.Send([][]byte{buf[:n]}, out)
		}
	}
}

func (d *kernelDevice) Name() string             { return d.name }
func (d *kernelDevice) ListenPort() uint16       { return d.bind.Port() }
func (d *kernelDevice) STUNConn() net.PacketConn { return d.bind.STUNConn() }
func (d *kernelDevice) Net() *netstack.Net       { return nil }

func (d *kernelDevice) lookup(k keys.Key) (*kpeer, error) {
	if d.closed {
		return nil, ErrClosed
	}
	p, ok := d.peers[k]
	if !ok {
		return nil, fmt.Errorf("%w %s", ErrUnknownPeer, k)
	}
	return p, nil
}

func (d *kernelDevice) SetPeer(pc Peer) error {
	if pc.PublicKey.IsZero() {
		return errors.New("wg: set peer: zero public key")
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return ErrClosed
	}
	p, ok := d.peers[pc.PublicKey]
	ka := pc.PersistentKeepalive
	c := wgtypes.PeerConfig{PublicKey: wgtypes.Key(pc.PublicKey), ReplaceAllowedIPs: true, PersistentKeepaliveInterval: &ka}
	for _, a := range pc.AllowedIPs {
		c.AllowedIPs = append(c.AllowedIPs, *prefixNet(a.Masked()))
	}
	if !ok {
		proxy, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			return fmt.Errorf("wg: set peer %s: proxy socket: %w", pc.PublicKey, err)
		}
		p = &kpeer{proxy: proxy}
		c.Endpoint = proxy.LocalAddr().(*net.UDPAddr)
	}
	if err := d.wgc.ConfigureDevice(d.name, wgtypes.Config{Peers: []wgtypes.PeerConfig{c}}); err != nil {
		if !ok {
			p.proxy.Close()
		}
		return fmt.Errorf("wg: set peer %s: %w", pc.PublicKey, err)
	}
	var old []netip.Prefix
	if ok {
		old = p.cfg.AllowedIPs
	} else {
		d.peers[pc.PublicKey] = p
		d.wg.Add(1)
		go d.forward(p)
	}
	p.cfg = pc
	return d.routes.sync(old, pc.AllowedIPs)
}

func (d *kernelDevice) RemovePeer(k keys.Key) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	p, err := d.lookup(k)
	if err != nil {
		return err
	}
	if err := d.wgc.ConfigureDevice(d.name, wgtypes.Config{Peers: []wgtypes.PeerConfig{{PublicKey: wgtypes.Key(k), Remove: true}}}); err != nil {
		return fmt.Errorf("wg: remove peer %s: %w", k, err)
	}
	d.forget(k, p)
	return d.routes.sync(p.cfg.AllowedIPs, nil)
}

// forget drops p's proxy, path and index entries; d.mu must be held.
func (d *kernelDevice) forget(k keys.Key, p *kpeer) {
	delete(d.peers, k)
	if d.byAddr[p.direct] == p {
		delete(d.byAddr, p.direct)
	}
	if p.relay != nil {
		delete(d.relays, p.relay)
		p.relay.Stop()
	}
	p.proxy.Close()
}

func (d *kernelDevice) SetDirect(k keys.Key, remote netip.AddrPort) error {
	remote = netip.AddrPortFrom(remote.Addr().Unmap(), remote.Port())
	if !remote.IsValid() || remote.Port() == 0 {
		return fmt.Errorf("wg: set direct %s: invalid address %v", k, remote)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	p, err := d.lookup(k)
	if err != nil {
		return err
	}
	if d.byAddr[p.direct] == p {
		delete(d.byAddr, p.direct)
	}
	p.direct = remote
	d.byAddr[remote] = p
	p.out = &conn.StdNetEndpoint{AddrPort: remote}
	return nil // the relay, if any, is still read and forwarded
}

func (d *kernelDevice) SetRelayed(k keys.Key, c net.Conn) error {
	if c == nil {
		return fmt.Errorf("wg: set relayed %s: nil conn", k)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	p, err := d.lookup(k)
	if err != nil {
		return err
	}
	if p.relay == nil || p.relay.Conn() != c || !p.relay.Reading() {
		r, err := d.bind.Relay(c)
		if err != nil {
			return fmt.Errorf("wg: set relayed %s: %w", k, err)
		}
		if p.relay != nil {
			delete(d.relays, p.relay)
			p.relay.Stop()
		}
		p.relay = r
		d.relays[r] = p
	}
	p.out = p.relay
	return nil
}

// fwDropsEvery bounds how often Counters reads the firewall's counters
// (a netlink dump; the memory trimmer polls Counters every second).
const fwDropsEvery = 5 * time.Second

// Counters reports the bind's traffic and drops (every WireGuard message
// of the kernel's passes through it, by the proxy) and the firewall table's
// drops (Config.Filter does not run here), the latter at most fwDropsEvery
// old.
func (d *kernelDevice) Counters() Counters {
	var c Counters
	c.STUNDropped, c.RelayDropped = d.bind.Drops()
	c.RxBytes, c.TxBytes = d.bind.Traffic()
	if d.fw == nil {
		return c
	}
	d.dropsMu.Lock()
	defer d.dropsMu.Unlock()
	if now := time.Now(); now.Sub(d.dropsAt) >= fwDropsEvery {
		if in, out, err := d.fw.Drops(); err == nil {
			d.dropsIn, d.dropsOut = in, out
		}
		d.dropsAt = now
	}
	c.FilteredIn, c.FilteredOut = d.dropsIn, d.dropsOut
	return c
}

func (d *kernelDevice) Stats() ([]PeerStats, error) {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil, ErrClosed
	}
	paths := make(map[keys.Key]conn.Endpoint, len(d.peers))
	for k, p := range d.peers {
		paths[k] = p.out
	}
	d.mu.Unlock()
	kd, err := d.wgc.Device(d.name)
	if err != nil {
		return nil, fmt.Errorf("wg: stats: %w", err)
	}
	out := make([]PeerStats, 0, len(kd.Peers))
	for _, kp := range kd.Peers {
		s := PeerStats{
			PublicKey:     keys.Key(kp.PublicKey),
			LastHandshake: kp.LastHandshakeTime,
			RxBytes:       kp.ReceiveBytes,
			TxBytes:       kp.TransmitBytes,
		}
		if kp.PresharedKey != (wgtypes.Key{}) {
			psk := [32]byte(kp.PresharedKey)
			s.PresharedKey = &psk
		}
		if ep := paths[s.PublicKey]; ep != nil {
			s.Endpoint = ep.DstToString()
			_, s.Relayed = ep.(*bind.RelayEndpoint)
		}
		if !s.LastHandshake.IsZero() && s.LastHandshake.Unix() == 0 {
			s.LastHandshake = time.Time{}
		}
		out = append(out, s)
	}
	return out, nil
}

func (d *kernelDevice) Close() error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil
	}
	d.closed = true
	for k, p := range d.peers {
		d.forget(k, p)
	}
	err := d.routes.clear()
	d.mu.Unlock()
	if d.bind != nil {
		d.bind.Close()
		d.bind.Stop()
	}
	d.wg.Wait()
	if d.wgc != nil {
		d.wgc.Close()
	}
	if lerr := netlink.LinkDel(d.link); lerr != nil {
		err = errors.Join(err, fmt.Errorf("wg: delete link %s: %w", d.name, lerr))
	}
	if d.fw != nil { // after the link: it never runs without its rules
		err = errors.Join(err, d.fw.Close())
	}
	return err
}

// SetGuard implements GuardDevice.
func (d *kernelDevice) SetGuard(ps []netip.Prefix) {
	d.mu.Lock()
	b := d.bind
	d.mu.Unlock()
	if b != nil {
		b.SetGuard(ps)
	}
}

// RouteInfo implements RouteReporter.
func (d *kernelDevice) RouteInfo() RouteInfo {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.routes.info()
}
