// Package bind is the one UDP socket of a userspace WireGuard device
// (design "Path", step 4). Bind is a conn.Bind that wraps wireguard-go's
// conn.StdNetBind, so data packets keep its batch I/O (recvmmsg/sendmmsg)
// and UDP GSO/GRO, and adds two things on top:
//
//   - STUN demultiplexing: STUN messages that arrive on the WireGuard port
//     are taken out of each received batch and handed to a net.PacketConn
//     (STUNConn) that pion/ice's UDP mux reads; what ICE writes to it leaves
//     through the same socket. So the NAT mapping ICE discovers and checks is
//     the one WireGuard uses.
//   - Relayed paths: Relay gives WireGuard an endpoint of its own whose sends
//     go through a net.Conn (an ICE/TURN connection) and whose receives come
//     back as an extra ReceiveFunc.
//
// Only wg imports it; the agent engine sees it through wg.Device.
package bind

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"

	"go.uber.org/zap"
	"golang.zx2c4.com/wireguard/conn"
)

// Options tune a Bind. The zero value is usable.
type Options struct {
	// MaxPacket is the largest WireGuard message a relayed conn may deliver;
	// it sizes the relay read buffers. Default 65535.
	MaxPacket int
	// STUNQueue is how many STUN packets may wait for the ICE reader before
	// new ones are dropped. Default 256.
	STUNQueue int
	// RelayQueue is how many relayed packets may wait for WireGuard's
	// receive routine. Default 128.
	RelayQueue int
	Log        *zap.Logger
}

// Bind is a conn.Bind over one UDP port (IPv4 and IPv6) that also carries
// STUN for ICE and relayed paths. Make it with New; it lives until Stop,
// across any number of Open/Close cycles wireguard-go performs.
type Bind struct {
	std   conn.Bind // *conn.StdNetBind
	opts  Options
	log   *zap.Logger
	port  atomic.Uint32
	hasV6 atomic.Bool

	mu     sync.Mutex
	isOpen bool
	closed chan struct{}           // closed by Close; makes this Open's relay ReceiveFunc return
	v6     atomic.Pointer[sender6] // IPv6 sends while open (send6.go)
	relays map[uint64]*RelayEndpoint
	nextID uint64
	stun   *stunConn

	claims  atomic.Pointer[map[claimKey]*RelayEndpoint] // nil when empty
	relayQ  chan relayPacket
	bufPool sync.Pool
	done    chan struct{} // closed by Stop
	stopped bool

	guard atomic.Pointer[[]netip.Prefix] // see SetGuard; nil when empty

	stunDrops  atomic.Uint64
	relayDrops atomic.Uint64
	guardDrops atomic.Uint64 // packets dropped by the guard, both ways
	rxBytes    atomic.Uint64 // WireGuard messages received (socket and relays)
	txBytes    atomic.Uint64 // WireGuard messages sent
}

var _ conn.Bind = (*Bind)(nil)

// New returns a Bind that is not yet open; wireguard-go opens it.
func New(opts Options) *Bind {
	if opts.MaxPacket <= 0 {
		opts.MaxPacket = 1<<16 - 1
	}
	if opts.STUNQueue <= 0 {
		opts.STUNQueue = 256
	}
	if opts.RelayQueue <= 0 {
		opts.RelayQueue = 128
	}
	if opts.Log == nil {
		opts.Log = zap.NewNop()
	}
	b := &Bind{
		std:    conn.NewStdNetBind(),
		opts:   opts,
		log:    opts.Log,
		relays: make(map[uint64]*RelayEndpoint),
		relayQ: make(chan relayPacket, opts.RelayQueue),
		done:   make(chan struct{}),
	}
	b.bufPool.New = func() any { s := make([]byte, opts.MaxPacket); return &s }
	return b
}

// Open implements conn.Bind: it opens the UDP sockets and returns their
// receive functions (wrapped to take STUN out) plus one for relayed paths.
func (b *Bind) Open(port uint16) ([]conn.ReceiveFunc, uint16, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.stopped {
		return nil, 0, net.ErrClosed
	}
	if b.isOpen {
		return nil, 0, conn.ErrBindAlreadyOpen
	}
	fns, actual, err := b.std.Open(port)
	if err != nil {
		return nil, 0, err
	}
	out := make([]conn.ReceiveFunc, 0, len(fns)+1)
	v6 := false
	for _, fn := range fns {
		v6 = v6 || fn.PrettyName() == "v6"
		out = append(out, b.counted(b.demux(fn)))
	}
	b.hasV6.Store(v6)
	if v6 {
		b.v6.Store(newSender6(b.std))
	}
	b.closed = make(chan struct{})
	out = append(out, b.counted(b.receiveRelayed(b.closed)))
	b.isOpen = true
	b.port.Store(uint32(actual))
	return out, actual, nil
}

// Close implements conn.Bind. Relayed paths, their readers and STUNConn
// survive it (wireguard-go closes and reopens its bind when the port
// changes or the device goes down and up); Stop ends them.
func (b *Bind) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.isOpen {
		b.isOpen = false
		close(b.closed)
	}
	b.v6.Store(nil)
	return b.std.Close()
}

// Stop ends everything Close leaves running: it stops reading every relayed
// conn (see RelayEndpoint.Stop) and closes STUNConn. Call it after the
// wireguard-go device is closed. It does not wait for relay readers blocked
// in a conn whose deadlines are no-ops (ice.Conn); those end when the conn's
// owner closes it.
func (b *Bind) Stop() {
	b.mu.Lock()
	if b.stopped {
		b.mu.Unlock()
		return
	}
	b.stopped = true
	close(b.done)
	relays := make([]*RelayEndpoint, 0, len(b.relays))
	for _, r := range b.relays {
		relays = append(relays, r)
	}
	s := b.stun
	b.stun = nil
	b.mu.Unlock()
	for _, r := range relays {
		r.Stop()
	}
	if s != nil {
		s.Close()
	}
}

// Port returns the UDP port of the last successful Open (0 before).
func (b *Bind) Port() uint16 { return uint16(b.port.Load()) }

// SetMark implements conn.Bind.
func (b *Bind) SetMark(mark uint32) error { return b.std.SetMark(mark) }

// BatchSize implements conn.Bind.
func (b *Bind) BatchSize() int { return b.std.BatchSize() }

// Send implements conn.Bind: relayed endpoints write to their conn, every
// other endpoint goes out of the UDP socket with StdNetBind's batching.
func (b *Bind) Send(bufs [][]byte, ep conn.Endpoint) error {
	if _, ok := ep.(*RelayEndpoint); !ok && b.guarded(ep.DstIP()) {
		b.guardDrops.Add(uint64(len(bufs)))
		return nil
	}
	n := 0
	for _, p := range bufs {
		n += len(p)
	}
	b.txBytes.Add(uint64(n))
	if r, ok := ep.(*RelayEndpoint); ok {
		return r.send(bufs)
	}
	return b.sendUDP(bufs, ep)
}

// sendUDP sends out of the UDP socket: IPv6 through sender6 (see send6.go),
// IPv4 with StdNetBind's batching and GSO.
func (b *Bind) sendUDP(bufs [][]byte, ep conn.Endpoint) error {
	if ep.DstIP().Is6() {
		if s := b.v6.Load(); s != nil {
			if se, ok := ep.(*conn.StdNetEndpoint); ok {
				return s.send(bufs, se.AddrPort)
			}
		}
	}
	return b.std.Send(bufs, ep)
}

// ParseEndpoint implements conn.Bind. It understands the addresses of
// relayed paths (see RelayEndpoint) as well as ordinary ip:port.
func (b *Bind) ParseEndpoint(s string) (conn.Endpoint, error) {
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return nil, fmt.Errorf("bind: endpoint %q: %w", s, err)
	}
	if id, ok := relayID(ap); ok {
		b.mu.Lock()
		r := b.relays[id]
		b.mu.Unlock()
		if r == nil {
			return nil, fmt.Errorf("bind: endpoint %s: %w", s, ErrNoRelay)
		}
		return r, nil
	}
	return b.std.ParseEndpoint(s)
}

// ErrNoRelay is returned when an endpoint names a relayed path that does
// not exist (any more).
var ErrNoRelay = errors.New("no such relayed path")

// Drops reports how many STUN packets were dropped because the ICE reader
// was slow or absent, and how many relayed packets were dropped because the
// device was stopped or the path replaced before WireGuard took them.
func (b *Bind) Drops() (stun, relay uint64) {
	return b.stunDrops.Load(), b.relayDrops.Load()
}

// Traffic reports how many bytes of WireGuard messages the bind received
// and sent since New, over the UDP socket and relayed paths together (STUN
// not included). One atomic add per batch: cheap enough to watch for a
// tunnel that went quiet.
func (b *Bind) Traffic() (rx, tx uint64) {
	return b.rxBytes.Load(), b.txBytes.Load()
}

// counted wraps a ReceiveFunc to add what it returns to the received bytes.
func (b *Bind) counted(fn conn.ReceiveFunc) conn.ReceiveFunc {
	return func(bufs [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
		n, err := fn(bufs, sizes, eps)
		sum := 0
		for _, s := range sizes[:n] {
			sum += s
		}
		if sum > 0 {
			b.rxBytes.Add(uint64(sum))
		}
		return n, err
	}
}

// send writes one packet to ap through the UDP socket (STUNConn's writes).
func (b *Bind) sendTo(p []byte, ap netip.AddrPort) error {
	b.mu.Lock()
	open := b.isOpen
	b.mu.Unlock()
	if !open {
		return net.ErrClosed
	}
	ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	if b.guarded(ap.Addr()) {
		b.guardDrops.Add(1)
		return ErrGuarded
	}
	return b.sendUDP([][]byte{p}, &conn.StdNetEndpoint{AddrPort: ap})
}

// demux wraps one of StdNetBind's receive functions. StdNetBind hands back
// single datagrams (GRO batches already split); STUN messages among them are
// copied to STUNConn and their size set to zero, which the ReceiveFunc
// contract tells wireguard-go to skip. The WireGuard packets stay where they
// are: nothing is moved or copied. (Moving them would be wrong: wireguard-go
// reads packet i from its own buffer array, not from bufs[i].) Packets from
// a claimed address get the claiming relay as their endpoint (see Claim).
func (b *Bind) demux(fn conn.ReceiveFunc) conn.ReceiveFunc {
	return func(bufs [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
		n, err := fn(bufs, sizes, eps)
		if err != nil {
			return n, err
		}
		claims := b.claims.Load()
		guard := b.guard.Load()
		var (
			lastFrom  netip.AddrPort // batches mostly come from one sender:
			lastRelay *RelayEndpoint // look its claim up once
			lastSrc   netip.Addr     // and whether it is guarded
			lastBad   bool
		)
		for i := 0; i < n; i++ {
			if sizes[i] == 0 {
				continue
			}
			if guard != nil {
				// A received endpoint's destination is its sender.
				if from := eps[i].DstIP(); from != lastSrc {
					lastSrc, lastBad = from, inPrefixes(*guard, from)
				}
				if lastBad {
					b.guardDrops.Add(1)
					sizes[i] = 0
					eps[i] = nil
					continue
				}
			}
			if IsSTUN(bufs[i][:sizes[i]]) {
				b.deliverSTUN(bufs[i][:sizes[i]], eps[i])
				sizes[i] = 0
				eps[i] = nil
				continue
			}
			if claims != nil {
				if se, ok := eps[i].(*conn.StdNetEndpoint); ok {
					if se.AddrPort != lastFrom {
						lastFrom, lastRelay = se.AddrPort, (*claims)[keyOf(se.AddrPort)]
					}
					if lastRelay != nil && !lastRelay.stopped.Load() {
						eps[i] = lastRelay
					}
				}
			}
		}
		return n, nil
	}
}

// SetGuard makes the bind drop every packet that arrives on the UDP socket
// from an address in ps, and every packet WireGuard or ICE would send
// there (sends to relayed endpoints are not affected). ps are the
// addresses that lead into the mesh itself (its overlay network, networks
// it routes that the socket would follow): a packet from there came
// through the tunnel, so a path there would carry WireGuard inside
// WireGuard. Dropping them before anyone sees them keeps ICE from learning
// a peer-reflexive candidate from them and WireGuard from roaming to them.
// Empty ps turns the guard off.
func (b *Bind) SetGuard(ps []netip.Prefix) {
	if len(ps) == 0 {
		b.guard.Store(nil)
		return
	}
	cp := make([]netip.Prefix, len(ps))
	for i, p := range ps {
		cp[i] = p.Masked()
	}
	b.guard.Store(&cp)
}

// Guarded counts the packets SetGuard's prefixes dropped, in and out.
func (b *Bind) Guarded() uint64 { return b.guardDrops.Load() }

// ErrGuarded is returned by STUNConn's writes to a guarded address.
var ErrGuarded = errors.New("bind: address leads into the mesh")

func (b *Bind) guarded(a netip.Addr) bool {
	g := b.guard.Load()
	return g != nil && inPrefixes(*g, a)
}

func inPrefixes(ps []netip.Prefix, a netip.Addr) bool {
	a = a.Unmap()
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

func unmap(ap netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// claimKey is an address and port in a form that is cheap to hash (IPv4 as
// IPv4-mapped IPv6); zones are ignored.
type claimKey struct {
	addr [16]byte
	port uint16
}

func keyOf(ap netip.AddrPort) claimKey {
	return claimKey{addr: ap.Addr().As16(), port: ap.Port()}
}

// Claim makes WireGuard packets that arrive on the UDP socket from addr
// enter WireGuard as if they had come through r (r nil: undo). The device
// claims a peer's former direct address for its relay while the peer is
// relayed: otherwise wireguard-go's roaming would move the peer back to the
// direct path on every packet the remote still sends there, and two peers
// switching to a relay at slightly different times would keep pulling each
// other back to direct. Packets from addresses nobody claimed roam as usual.
func (b *Bind) Claim(addr netip.AddrPort, r *RelayEndpoint) {
	key := keyOf(addr)
	b.mu.Lock()
	defer b.mu.Unlock()
	next := make(map[claimKey]*RelayEndpoint)
	if cur := b.claims.Load(); cur != nil {
		for k, v := range *cur {
			next[k] = v
		}
	}
	if r == nil {
		delete(next, key)
	} else {
		next[key] = r
	}
	if len(next) == 0 {
		b.claims.Store(nil)
		return
	}
	b.claims.Store(&next)
}

// STUN message header (RFC 5389 section 6).
const (
	stunHeaderLen   = 20
	stunMagicCookie = 0x2112A442
)

// IsSTUN reports whether p is a STUN message: the first two bits are zero,
// bytes 4–7 hold the magic cookie and the length field matches the packet
// (a multiple of 4). No WireGuard message passes: their bytes 2–3 are zero,
// which would mean a 20-byte STUN message, and every WireGuard message is
// at least 32 bytes long.
func IsSTUN(p []byte) bool {
	if len(p) < stunHeaderLen || p[0]&0xC0 != 0 {
		return false
	}
	if uint32(p[4])<<24|uint32(p[5])<<16|uint32(p[6])<<8|uint32(p[7]) != stunMagicCookie {
		return false
	}
	l := int(p[2])<<8 | int(p[3])
	return l%4 == 0 && l+stunHeaderLen == len(p)
}
