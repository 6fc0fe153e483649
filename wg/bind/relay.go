package bind

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"golang.zx2c4.com/wireguard/conn"
)

// RelayEndpoint is a WireGuard endpoint whose packets travel over a
// net.Conn instead of the UDP socket: Send writes each packet to the conn,
// and a goroutine reads the conn and feeds what it reads into WireGuard
// through the bind's extra ReceiveFunc.
//
// Its address is [100::ID]:0, ID a per-bind counter, in the RFC 6666
// discard-only prefix 100::/64, which no real peer can have: it is what
// `wg show` prints, a valid ip:port that ParseEndpoint maps back to this
// path, and unique per path, so wireguard-go's per-address cookie and rate
// limiting never mix two peers.
//
// Roaming: wireguard-go sets a peer's endpoint to the endpoint of every
// authenticated packet it receives. Packets read from the conn carry the
// endpoint set with ReceiveAs (the relay itself by default), so a peer that
// the agent moved to a direct path is not pulled back to the relay by
// packets the remote still sends through it, and a relayed peer stays on
// its relay.
type RelayEndpoint struct {
	b    *Bind
	id   uint64
	addr netip.AddrPort
	c    net.Conn
	bc   BatchConn // c, when it has batch methods
	// unreceive undoes bc.Receive.
	unreceive func()

	recvAs   atomic.Pointer[endpointBox]
	stopped  atomic.Bool
	stop     chan struct{}
	stopOnce sync.Once
	readDone chan struct{} // closed when readLoop returns
}

type endpointBox struct{ ep conn.Endpoint }

var _ conn.Endpoint = (*RelayEndpoint)(nil)

// BatchConn is a relayed conn that can move many WireGuard messages per
// system call (nat/peerconn's relay sessions over TURN/UDP). Relay uses
// these methods when its conn has them; Read and Write still carry what
// they do not.
type BatchConn interface {
	net.Conn
	// WriteBatch sends each of bufs as one message, in order.
	WriteBatch(bufs [][]byte) error
	// Receive makes the conn hand the WireGuard messages it reads to fn, in
	// order and in batches, instead of returning them from Read; maxMsg is the
	// largest message fn takes (it sizes the conn's read buffers). fn's
	// slices are valid only during the call; fn may block. cancel undoes
	// it unless another Receive replaced fn since.
	Receive(maxMsg int, fn func(msgs [][]byte)) (cancel func())
}

// relayPrefix is 100::/64 (RFC 6666, discard-only).
var relayPrefix = netip.MustParsePrefix("100::/64")

func relayAddr(id uint64) netip.AddrPort {
	var a [16]byte
	a[0] = 0x01
	binary.BigEndian.PutUint64(a[8:], id)
	return netip.AddrPortFrom(netip.AddrFrom16(a), 0)
}

func relayID(ap netip.AddrPort) (uint64, bool) {
	if ap.Port() != 0 || !relayPrefix.Contains(ap.Addr()) {
		return 0, false
	}
	a := ap.Addr().As16()
	return binary.BigEndian.Uint64(a[8:]), true
}

// IsRelayAddr reports whether s is the address of a relayed path.
func IsRelayAddr(s string) bool {
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return false
	}
	_, ok := relayID(ap)
	return ok
}

// Relay starts a relayed path over c and returns its endpoint; give
// WireGuard its address (UAPI endpoint=) to send a peer's packets through c.
// c must keep message boundaries (one Write is one WireGuard packet, one
// Read returns one), as an ice.Conn, a TURN allocation or a connected UDP
// socket do. Relay clears c's read deadline (an earlier Stop set it) and
// reads c until Stop, Bind.Stop or a read error. It never closes c.
func (b *Bind) Relay(c net.Conn) (*RelayEndpoint, error) {
	if c == nil {
		return nil, errors.New("bind: relay over a nil conn")
	}
	b.mu.Lock()
	if b.stopped {
		b.mu.Unlock()
		return nil, net.ErrClosed
	}
	b.nextID++
	r := &RelayEndpoint{b: b, id: b.nextID, addr: relayAddr(b.nextID), c: c, stop: make(chan struct{}), readDone: make(chan struct{})}
	b.relays[r.id] = r
	b.mu.Unlock()
	_ = c.SetReadDeadline(time.Time{})
	if bc, ok := c.(BatchConn); ok {
		r.bc = bc
		r.unreceive = bc.Receive(b.opts.MaxPacket, r.deliver)
	}
	go r.readLoop()
	return r, nil
}

// Conn returns the conn the path runs over.
func (r *RelayEndpoint) Conn() net.Conn { return r.c }

// Reading reports whether the path still reads its conn (false once the
// conn failed or the path was stopped).
func (r *RelayEndpoint) Reading() bool {
	select {
	case <-r.readDone:
		return false
	default:
		return !r.stopped.Load()
	}
}

// String returns the path's address, the form UAPI and `wg show` use.
func (r *RelayEndpoint) String() string { return r.addr.String() }

// ReceiveAs sets the endpoint that packets read from the conn carry into
// WireGuard (nil: the relay itself). Point it at a peer's current path
// before switching the peer away from this relay.
func (r *RelayEndpoint) ReceiveAs(ep conn.Endpoint) {
	if ep == nil {
		r.recvAs.Store(nil)
		return
	}
	r.recvAs.Store(&endpointBox{ep})
}

func (r *RelayEndpoint) receiveEndpoint() conn.Endpoint {
	if b := r.recvAs.Load(); b != nil {
		return b.ep
	}
	return r
}

// Stop ends the path: sends fail, the address no longer parses, packets
// still queued from it are dropped, and the reader is told to stop by a
// read deadline in the past. A conn whose deadlines do nothing (ice.Conn)
// keeps its reader blocked until the conn delivers one more packet (which
// is dropped) or is closed by its owner. Stop does not close the conn.
func (r *RelayEndpoint) Stop() {
	r.stopOnce.Do(func() {
		r.stopped.Store(true)
		close(r.stop)
		r.b.mu.Lock()
		delete(r.b.relays, r.id)
		r.b.mu.Unlock()
		if r.unreceive != nil {
			r.unreceive()
		}
		_ = r.c.SetReadDeadline(time.Unix(1, 0))
	})
}

func (r *RelayEndpoint) send(bufs [][]byte) error {
	if r.stopped.Load() {
		return fmt.Errorf("bind: send to %s: %w", r.addr, ErrNoRelay)
	}
	if r.bc != nil {
		if err := r.bc.WriteBatch(bufs); err != nil {
			return fmt.Errorf("bind: send to %s: %w", r.addr, err)
		}
		return nil
	}
	for _, p := range bufs {
		if _, err := r.c.Write(p); err != nil {
			return fmt.Errorf("bind: send to %s: %w", r.addr, err)
		}
	}
	return nil
}

type relayPacket struct {
	buf *[]byte
	n   int
	r   *RelayEndpoint
}

// readLoop reads the conn until Stop, Bind.Stop, or the conn is closed or
// times out. Other errors (a connected UDP socket reports ICMP port
// unreachable as ECONNREFUSED on the next read) are retried with a backoff
// of up to a second.
func (r *RelayEndpoint) readLoop() {
	defer close(r.readDone)
	b := r.b
	log := b.log.With(zap.Stringer("relay", r.addr))
	failures := 0
	for {
		bp := b.bufPool.Get().(*[]byte)
		n, err := r.c.Read(*bp)
		if r.stopped.Load() {
			b.bufPool.Put(bp)
			return
		}
		if err != nil {
			b.bufPool.Put(bp)
			var ne net.Error
			if errors.Is(err, net.ErrClosed) || errors.Is(err, io.EOF) || (errors.As(err, &ne) && ne.Timeout()) {
				log.Debug("relay conn read ended", zap.Error(err))
				return
			}
			failures = min(failures+1, 100)
			select {
			case <-time.After(time.Duration(failures) * 10 * time.Millisecond):
				continue
			case <-r.stop:
				return
			case <-b.done:
				return
			}
		}
		failures = 0
		if n == 0 {
			b.bufPool.Put(bp)
			continue
		}
		select {
		case b.relayQ <- relayPacket{buf: bp, n: n, r: r}:
		case <-r.stop:
			b.bufPool.Put(bp)
			b.relayDrops.Add(1)
			return
		case <-b.done:
			b.bufPool.Put(bp)
			b.relayDrops.Add(1)
			return
		}
	}
}

// deliver queues the messages a BatchConn read for WireGuard's receive
// routine, as readLoop does with what it reads. It blocks while the queue
// is full and WireGuard reads it, which holds the conn's reader (and the
// STUN behind the messages) up: while the bind is closed (the device is
// down) it drops them instead, so the conn's ICE consent checks go on.
func (r *RelayEndpoint) deliver(msgs [][]byte) {
	b := r.b
	b.mu.Lock()
	open, closed := b.isOpen, b.closed
	b.mu.Unlock()
	if !open {
		b.relayDrops.Add(uint64(len(msgs)))
		return
	}
	for i, m := range msgs {
		if r.stopped.Load() {
			b.relayDrops.Add(uint64(len(msgs) - i))
			return
		}
		if len(m) == 0 || len(m) > b.opts.MaxPacket {
			continue
		}
		bp := b.bufPool.Get().(*[]byte)
		p := relayPacket{buf: bp, n: copy(*bp, m), r: r}
		select { // the usual case, without selectgo's cost per message
		case b.relayQ <- p:
			continue
		default:
		}
		select {
		case b.relayQ <- p:
			continue
		case <-r.stop:
		case <-b.done:
		case <-closed:
		}
		b.bufPool.Put(bp)
		b.relayDrops.Add(uint64(len(msgs) - i))
		return
	}
}

// receiveRelayed is the ReceiveFunc for all relayed paths: it waits for one
// packet, then takes whatever else is queued, up to the batch size.
func (b *Bind) receiveRelayed(closed <-chan struct{}) conn.ReceiveFunc {
	return func(bufs [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
		var p relayPacket
		select {
		case p = <-b.relayQ:
		case <-closed:
			return 0, net.ErrClosed
		}
		n := 0
		for {
			if p.r.stopped.Load() {
				b.relayDrops.Add(1)
				sizes[n], eps[n] = 0, nil
			} else {
				sizes[n] = copy(bufs[n], (*p.buf)[:p.n])
				eps[n] = p.r.receiveEndpoint()
			}
			b.bufPool.Put(p.buf)
			n++
			if n == len(bufs) {
				return n, nil
			}
			select {
			case p = <-b.relayQ:
			default:
				return n, nil
			}
		}
	}
}

// ClearSrc implements conn.Endpoint; a relayed path has no source address.
func (r *RelayEndpoint) ClearSrc() {}

// SrcToString implements conn.Endpoint.
func (r *RelayEndpoint) SrcToString() string { return "" }

// DstToString implements conn.Endpoint: the path's address.
func (r *RelayEndpoint) DstToString() string { return r.addr.String() }

// DstToBytes implements conn.Endpoint (used for cookie MACs).
func (r *RelayEndpoint) DstToBytes() []byte { b, _ := r.addr.MarshalBinary(); return b }

// DstIP implements conn.Endpoint.
func (r *RelayEndpoint) DstIP() netip.Addr { return r.addr.Addr() }

// SrcIP implements conn.Endpoint.
func (r *RelayEndpoint) SrcIP() netip.Addr { return netip.Addr{} }
