package wg

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"go.uber.org/zap"
	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun"
	"golang.zx2c4.com/wireguard/tun/netstack"

	"meshd/internal/keys"
	"meshd/wg/bind"
)

// goDevice is a Device run by wireguard-go (userspace and netstack modes)
// over the one-socket bind. Everything it asks of wireguard-go goes through
// UAPI (IpcSet/IpcGet), the interface `wg` uses too.
type goDevice struct {
	name    string
	pub     keys.Key
	log     *zap.Logger
	dev     *device.Device
	bind    *bind.Bind
	filter  *filteredTUN        // nil without Config.Filter
	failed  *initiationFailures // see handshake.go
	tnet    *netstack.Net       // ModeNetstack only
	routes  *routeSet           // nil when the OS needs no routes (netstack)
	onStop  []func()            // run by Close before the device goes away (UAPI listener)
	logGate *logGate            // silences log once closed

	mu     sync.Mutex
	closed bool
	peers  map[keys.Key]*peerState
}

var _ Device = (*goDevice)(nil)

type peerState struct {
	cfg    Peer
	relay  *bind.RelayEndpoint // the last relayed path, still read after SetDirect
	direct netip.AddrPort      // the last direct address, claimed by relay while relayed
	// hadPath: a path was set since SetPeer added the peer. keepalive:
	// wireguard-go has cfg.PersistentKeepalive (0 until then). grace: the
	// controlled side's wait for the first handshake (handshake.go).
	hadPath   bool
	keepalive bool
	grace     *time.Timer
}

// stop ends what the peer's state keeps running; d.mu is held.
func (st *peerState) stop() {
	if st.grace != nil {
		st.grace.Stop()
		st.grace = nil
	}
}

// startGoDevice runs wireguard-go on tdev with a new one-socket bind, sets
// the key and port and brings it up. On error it closes tdev.
func startGoDevice(cfg Config, tdev tun.Device) (*goDevice, error) {
	gate := new(logGate)
	cfg.Log = gate.wrap(cfg.Log)
	b := bind.New(bind.Options{MaxPacket: cfg.MTU + 128, Log: cfg.Log.Named("bind")})
	failed := new(initiationFailures)
	var ft *filteredTUN
	if cfg.Filter != nil {
		ft = newFilteredTUN(tdev, cfg.Filter)
		tdev = ft
	}
	dev := device.NewDevice(tdev, b, goLogger(cfg.Log, failed))
	d := &goDevice{
		name:    cfg.Name,
		pub:     cfg.PrivateKey.Public(),
		log:     cfg.Log,
		logGate: gate,
		dev:     dev,
		bind:    b,
		filter:  ft,
		failed:  failed,
		peers:   make(map[keys.Key]*peerState),
	}
	conf := fmt.Sprintf("private_key=%s\nlisten_port=%d\n", cfg.PrivateKey.Hex(), cfg.ListenPort)
	if err := dev.IpcSet(conf); err != nil {
		d.shutdown()
		return nil, fmt.Errorf("wg: configure %s: %w", cfg.Name, err)
	}
	if err := dev.Up(); err != nil {
		d.shutdown()
		return nil, fmt.Errorf("wg: up %s (port %d): %w", cfg.Name, cfg.ListenPort, err)
	}
	return d, nil
}

func (d *goDevice) shutdown() {
	d.dev.Close() // closes the TUN and the bind
	d.bind.Stop()
	d.logGate.close()
}

func (d *goDevice) Name() string             { return d.name }
func (d *goDevice) ListenPort() uint16       { return d.bind.Port() }
func (d *goDevice) STUNConn() net.PacketConn { return d.bind.STUNConn() }
func (d *goDevice) Net() *netstack.Net       { return d.tnet }

// lookup returns the state of a known peer; d.mu must be held.
func (d *goDevice) lookup(k keys.Key) (*peerState, error) {
	if d.closed {
		return nil, ErrClosed
	}
	st, ok := d.peers[k]
	if !ok {
		return nil, fmt.Errorf("%w %s", ErrUnknownPeer, k)
	}
	return st, nil
}

func (d *goDevice) SetPeer(p Peer) error {
	if p.PublicKey.IsZero() {
		return errors.New("wg: set peer: zero public key")
	}
	for _, a := range p.AllowedIPs {
		if !a.IsValid() {
			return fmt.Errorf("wg: set peer %s: invalid allowed IP %v", p.PublicKey, a)
		}
	}
	p.AllowedIPs = slices.Clone(p.AllowedIPs)
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return ErrClosed
	}
	st, ok := d.peers[p.PublicKey]
	var old *Peer
	if ok {
		if samePeer(st.cfg, p) {
			return nil
		}
		old = &st.cfg
	}
	eff := p // what wireguard-go gets: no keepalive before the first path
	if !ok || !st.keepalive {
		eff.PersistentKeepalive = 0
	}
	if err := d.dev.IpcSet(peerConfig(eff, old)); err != nil {
		return fmt.Errorf("wg: set peer %s: %w", p.PublicKey, err)
	}
	if !ok {
		st = &peerState{}
		d.peers[p.PublicKey] = st
	}
	var oldIPs []netip.Prefix
	if old != nil {
		oldIPs = old.AllowedIPs
	}
	st.cfg = p
	return d.routes.sync(oldIPs, p.AllowedIPs)
}

func samePeer(a, b Peer) bool {
	return a.PublicKey == b.PublicKey && a.PersistentKeepalive == b.PersistentKeepalive &&
		slices.Equal(a.AllowedIPs, b.AllowedIPs)
}

func (d *goDevice) RemovePeer(k keys.Key) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	st, err := d.lookup(k)
	if err != nil {
		return err
	}
	if err := d.dev.IpcSet(removeConfig(k)); err != nil {
		return fmt.Errorf("wg: remove peer %s: %w", k, err)
	}
	delete(d.peers, k)
	st.stop()
	if st.direct.IsValid() {
		d.bind.Claim(st.direct, nil)
	}
	if st.relay != nil {
		st.relay.Stop()
	}
	return d.routes.sync(st.cfg.AllowedIPs, nil)
}

func (d *goDevice) SetDirect(k keys.Key, remote netip.AddrPort) error {
	remote = netip.AddrPortFrom(remote.Addr().Unmap(), remote.Port())
	if !remote.IsValid() || remote.Port() == 0 {
		return fmt.Errorf("wg: set direct %s: invalid address %v", k, remote)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	st, err := d.lookup(k)
	if err != nil {
		return err
	}
	if st.relay != nil {
		// What the remote still sends through the relay must not pull the
		// peer back to it.
		st.relay.ReceiveAs(&conn.StdNetEndpoint{AddrPort: remote})
	}
	// remote is this peer's now: no relay may claim it any more.
	if st.direct.IsValid() && st.direct != remote {
		d.bind.Claim(st.direct, nil)
	}
	d.bind.Claim(remote, nil)
	for _, o := range d.peers {
		if o != st && o.direct == remote {
			o.direct = netip.AddrPort{}
		}
	}
	st.direct = remote
	first := d.beforePath(k, st)
	if err := d.dev.IpcSet(endpointConfig(k, remote.String())); err != nil {
		return fmt.Errorf("wg: set direct %s %s: %w", k, remote, err)
	}
	d.afterPath(k, st, first)
	return nil
}

func (d *goDevice) SetRelayed(k keys.Key, c net.Conn) error {
	if c == nil {
		return fmt.Errorf("wg: set relayed %s: nil conn", k)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	st, err := d.lookup(k)
	if err != nil {
		return err
	}
	old := st.relay
	r := old
	if old == nil || old.Conn() != c || !old.Reading() {
		if r, err = d.bind.Relay(c); err != nil {
			return fmt.Errorf("wg: set relayed %s: %w", k, err)
		}
	}
	r.ReceiveAs(nil)
	if old != nil && old != r {
		old.ReceiveAs(r) // its last packets must not pull the peer back
	}
	if st.direct.IsValid() {
		d.bind.Claim(st.direct, r) // nor may what the remote still sends direct
	}
	first := d.beforePath(k, st)
	if err := d.dev.IpcSet(endpointConfig(k, r.String())); err != nil {
		if st.direct.IsValid() {
			d.bind.Claim(st.direct, nil)
		}
		if r != old {
			r.Stop()
		}
		return fmt.Errorf("wg: set relayed %s: %w", k, err)
	}
	if old != nil && old != r {
		old.Stop()
	}
	st.relay = r
	d.afterPath(k, st, first)
	return nil
}

func (d *goDevice) Stats() ([]PeerStats, error) {
	d.mu.Lock()
	closed := d.closed
	d.mu.Unlock()
	if closed {
		return nil, ErrClosed
	}
	s, err := d.dev.IpcGet()
	if err != nil {
		return nil, fmt.Errorf("wg: stats: %w", err)
	}
	return parseStats(s)
}

func (d *goDevice) Counters() Counters {
	var c Counters
	c.STUNDropped, c.RelayDropped = d.bind.Drops()
	c.RxBytes, c.TxBytes = d.bind.Traffic()
	if d.filter != nil {
		c.FilteredIn, c.FilteredOut = d.filter.droppedIn.Load(), d.filter.droppedOut.Load()
	}
	return c
}

// Close removes the routes, stops the UAPI listener, closes wireguard-go
// (which closes the TUN, so the interface disappears, and the socket) and
// stops the relay readers.
func (d *goDevice) Close() error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil
	}
	d.closed = true
	for _, st := range d.peers {
		st.stop()
	}
	err := d.routes.clear()
	d.mu.Unlock()
	for _, f := range d.onStop {
		f()
	}
	d.shutdown()
	return err
}

// SetGuard implements GuardDevice.
func (d *goDevice) SetGuard(ps []netip.Prefix) { d.bind.SetGuard(ps) }

// RouteInfo implements RouteReporter.
func (d *goDevice) RouteInfo() RouteInfo {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.routes.info()
}
