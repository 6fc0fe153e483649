// Package wgtest provides a fake wg.Device for tests of the code that drives
// a device (the agent engine). The fake moves no packets: it records every
// call in order and keeps the state the calls imply (peers, their allowed IPs
// and path), so a test can assert what the engine asked for, deterministically
// and without root, sockets or timers.
package wgtest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"golang.zx2c4.com/wireguard/tun/netstack"

	"meshd/internal/keys"
	"meshd/wg"
)

// Op names a recorded call.
type Op string

// The operations a Device records.
const (
	OpSetPeer    Op = "set-peer"
	OpRemovePeer Op = "remove-peer"
	OpSetDirect  Op = "set-direct"
	OpSetRelayed Op = "set-relayed"
)

// Call is one recorded call.
type Call struct {
	Op   Op
	Peer keys.Key
	// Config is the argument of SetPeer.
	Config wg.Peer
	// Remote is the argument of SetDirect.
	Remote netip.AddrPort
	// Conn is the argument of SetRelayed.
	Conn net.Conn
}

// String renders a call on one line, e.g. "set-direct AbC...= 192.0.2.1:51820",
// handy for comparing a whole trace with an expected block of text.
func (c Call) String() string {
	s := fmt.Sprintf("%s %s", c.Op, c.Peer)
	switch c.Op {
	case OpSetPeer:
		for _, p := range c.Config.AllowedIPs {
			s += " " + p.String()
		}
		if c.Config.PersistentKeepalive > 0 {
			s += " keepalive=" + c.Config.PersistentKeepalive.String()
		}
	case OpSetDirect:
		s += " " + c.Remote.String()
	}
	return s
}

// Path is how the fake believes a peer's packets travel.
type Path string

// Paths of a peer.
const (
	PathNone    Path = ""
	PathDirect  Path = "direct"
	PathRelayed Path = "relayed"
)

// PeerState is the state the calls so far imply for one peer.
type PeerState struct {
	Config wg.Peer
	Path   Path
	Remote netip.AddrPort // set when Path is PathDirect
	Conn   net.Conn       // set when Path is PathRelayed
	Stats  wg.PeerStats   // returned by Stats; set with SetStats
}

// ErrClosed is returned by every method after Close (it is wg.ErrClosed).
var ErrClosed = wg.ErrClosed

// ErrUnknownPeer is returned by SetDirect, SetRelayed and RemovePeer for a
// peer that SetPeer never added, as by the real devices (wg.ErrUnknownPeer).
var ErrUnknownPeer = wg.ErrUnknownPeer

// Device is a fake wg.Device. The zero value is not usable; use New.
type Device struct {
	name string
	port uint16

	mu      sync.Mutex
	calls   []Call
	peers   map[keys.Key]*PeerState
	fail    map[Op]error
	stun    net.PacketConn
	ownSTUN bool // stun was opened by the fake, so Close closes it
	closed  bool
	changed chan struct{} // closed and replaced on every recorded call
}

var _ wg.Device = (*Device)(nil)

// New returns a fake device named name that claims to listen on port.
func New(name string, port uint16) *Device {
	return &Device{
		name:    name,
		port:    port,
		peers:   make(map[keys.Key]*PeerState),
		fail:    make(map[Op]error),
		changed: make(chan struct{}),
	}
}

// FailNext makes the next call of op return err (once), without recording
// it or changing state.
func (d *Device) FailNext(op Op, err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.fail[op] = err
}

// SetSTUNConn sets what STUNConn returns. By default STUNConn opens a UDP
// socket on 127.0.0.1 on first use (closed by Close), which is enough for
// ICE agents with host candidates in tests.
func (d *Device) SetSTUNConn(c net.PacketConn) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.stun, d.ownSTUN = c, false
}

// SetStats sets what Stats reports for a peer that exists.
func (d *Device) SetStats(peer keys.Key, s wg.PeerStats) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if p, ok := d.peers[peer]; ok {
		s.PublicKey = peer
		p.Stats = s
	}
}

// Calls returns a copy of the calls recorded so far, in order.
func (d *Device) Calls() []Call {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.calls)
}

// Trace returns the recorded calls rendered with Call.String, one per line.
func (d *Device) Trace() string {
	var s string
	for _, c := range d.Calls() {
		s += c.String() + "\n"
	}
	return s
}

// Peer returns the state of one peer.
func (d *Device) Peer(k keys.Key) (PeerState, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	p, ok := d.peers[k]
	if !ok {
		return PeerState{}, false
	}
	return *p, true
}

// Peers returns the public keys of all peers, sorted.
func (d *Device) Peers() []keys.Key {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]keys.Key, 0, len(d.peers))
	for k := range d.peers {
		out = append(out, k)
	}
	slices.SortFunc(out, func(a, b keys.Key) int { return slices.Compare(a[:], b[:]) })
	return out
}

// Closed reports whether Close was called.
func (d *Device) Closed() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.closed
}

// WaitFor blocks until cond holds for the device (checked after every
// recorded call, and once at the start) or ctx ends. cond must not call
// methods of d; it receives d's state through the PeerState map snapshot.
func (d *Device) WaitFor(ctx context.Context, cond func(peers map[keys.Key]PeerState) bool) error {
	for {
		d.mu.Lock()
		snap := make(map[keys.Key]PeerState, len(d.peers))
		for k, p := range d.peers {
			snap[k] = *p
		}
		ch := d.changed
		d.mu.Unlock()
		if cond(snap) {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("wgtest: condition not met: %w", ctx.Err())
		}
	}
}

// record runs fn under the lock after the closed and injected-failure
// checks, appends c on success and wakes WaitFor.
func (d *Device) record(c Call, fn func() error) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return ErrClosed
	}
	if err, ok := d.fail[c.Op]; ok {
		delete(d.fail, c.Op)
		return err
	}
	if err := fn(); err != nil {
		return err
	}
	d.calls = append(d.calls, c)
	close(d.changed)
	d.changed = make(chan struct{})
	return nil
}

// Name implements wg.Device.
func (d *Device) Name() string { return d.name }

// ListenPort implements wg.Device.
func (d *Device) ListenPort() uint16 { return d.port }

// STUNConn implements wg.Device.
func (d *Device) STUNConn() net.PacketConn {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.stun == nil && !d.closed {
		c, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			return nil
		}
		d.stun, d.ownSTUN = c, true
	}
	return d.stun
}

// SetPeer implements wg.Device.
func (d *Device) SetPeer(p wg.Peer) error {
	p.AllowedIPs = slices.Clone(p.AllowedIPs)
	return d.record(Call{Op: OpSetPeer, Peer: p.PublicKey, Config: p}, func() error {
		if p.PublicKey.IsZero() {
			return errors.New("wgtest: set peer: zero public key")
		}
		st, ok := d.peers[p.PublicKey]
		if !ok {
			st = &PeerState{Stats: wg.PeerStats{PublicKey: p.PublicKey}}
			d.peers[p.PublicKey] = st
		}
		st.Config = p
		return nil
	})
}

// RemovePeer implements wg.Device.
func (d *Device) RemovePeer(k keys.Key) error {
	return d.record(Call{Op: OpRemovePeer, Peer: k}, func() error {
		if _, ok := d.peers[k]; !ok {
			return fmt.Errorf("%w %s", ErrUnknownPeer, k)
		}
		delete(d.peers, k)
		return nil
	})
}

// SetDirect implements wg.Device.
func (d *Device) SetDirect(k keys.Key, remote netip.AddrPort) error {
	return d.record(Call{Op: OpSetDirect, Peer: k, Remote: remote}, func() error {
		p, ok := d.peers[k]
		if !ok {
			return fmt.Errorf("%w %s", ErrUnknownPeer, k)
		}
		if !remote.IsValid() {
			return fmt.Errorf("wgtest: set direct: invalid address %v", remote)
		}
		p.Path, p.Remote, p.Conn = PathDirect, remote, nil
		p.Stats.Endpoint = remote.String()
		return nil
	})
}

// SetRelayed implements wg.Device.
func (d *Device) SetRelayed(k keys.Key, c net.Conn) error {
	return d.record(Call{Op: OpSetRelayed, Peer: k, Conn: c}, func() error {
		p, ok := d.peers[k]
		if !ok {
			return fmt.Errorf("%w %s", ErrUnknownPeer, k)
		}
		if c == nil {
			return errors.New("wgtest: set relayed: nil conn")
		}
		p.Path, p.Remote, p.Conn = PathRelayed, netip.AddrPort{}, c
		p.Stats.Endpoint = ""
		if ra := c.RemoteAddr(); ra != nil {
			p.Stats.Endpoint = ra.String()
		}
		return nil
	})
}

// Counters implements wg.Device; the fake drops nothing.
func (d *Device) Counters() wg.Counters { return wg.Counters{} }

// Stats implements wg.Device. It reports what SetStats set, with Endpoint
// following the last path call.
func (d *Device) Stats() ([]wg.PeerStats, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil, ErrClosed
	}
	out := make([]wg.PeerStats, 0, len(d.peers))
	for _, p := range d.peers {
		out = append(out, p.Stats)
	}
	slices.SortFunc(out, func(a, b wg.PeerStats) int { return slices.Compare(a.PublicKey[:], b.PublicKey[:]) })
	return out, nil
}

// Net implements wg.Device; the fake has no netstack.
func (d *Device) Net() *netstack.Net { return nil }

// Close implements wg.Device.
func (d *Device) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil
	}
	d.closed = true
	close(d.changed)
	d.changed = make(chan struct{})
	if d.stun != nil && d.ownSTUN {
		return d.stun.Close()
	}
	return nil
}

// Handshake sets the peer's last handshake time in Stats, as if the tunnel
// had come up at t; a convenience for handshake-watchdog tests.
func (d *Device) Handshake(peer keys.Key, t time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if p, ok := d.peers[peer]; ok {
		p.Stats.LastHandshake = t
	}
}
