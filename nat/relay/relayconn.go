package relay

import (
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// relayConn is an allocation's relay socket. pion reads peers' packets
// from it in the allocation's goroutine and writes clients' packets to it
// from the front's read loop; it counts both.
//
// Two relayed peers of one relay talk relay socket to relay socket. Those
// packets skip the kernel: WriteTo to another live relay address of this
// server queues the packet on that relayConn, whose ReadFrom returns it
// with the sender's relayed address as source, exactly what the socket
// would have returned. That saves a sendto and a recvfrom per packet (a
// third of the relay's system calls for a relayed pair) and works whether
// or not the public IP is local (no hairpin through a 1:1 NAT).
type relayConn struct {
	s       *Server
	f       *front
	id      string
	client  netip.AddrPort // UDP clients
	created time.Time
	uc      *net.UDPConn
	public  *net.UDPAddr
	port    uint16
	expire  *time.Timer

	// state: allocNew until pion confirmed the allocation to the client,
	// then allocCounted (in the gauges), allocClosed at the end.
	state atomic.Int32

	toPeer, fromPeer         atomic.Uint64
	pktsToPeer, pktsFromPeer atomic.Uint64

	// UDP clients: datagrams to peers, written and flushed by the front's
	// read loop (dirty: listed in the front's dirty list).
	peerOut *outBatch
	dirty   bool

	// Owned by the reader (pion's allocation goroutine).
	out     *outBatch // UDP clients: ChannelData to the client
	addrs   map[netip.AddrPort]*net.UDPAddr
	local   []inPacket // taken from in
	localAt int

	// In-process deliveries from the server's other relay sockets.
	inMu    sync.Mutex
	in      []inPacket
	waiting atomic.Bool // the reader is (about to be) blocked in the socket
	closed  atomic.Bool

	closeOnce sync.Once
}

var _ net.PacketConn = (*relayConn)(nil)

const (
	allocNew = iota
	allocCounted
	allocClosed
)

// Internal delivery: buffers as large as pion's relay read buffer (it
// truncates longer datagrams too), and a bound on queued packets per
// allocation, like a socket buffer's: 4096 × 1600 B is at most 6.5 MB, the
// size of the 7 MiB receive buffers the agents give their sockets. (1024
// dropped packets of the agents' batched relayed sends, 64 datagrams at a
// time: TCP through the tunnel saw hundreds of retransmits a run.)
const (
	inPacketSize     = 1600
	maxInternalQueue = 4096
)

type inPacket struct {
	buf  *[inPacketSize]byte
	n    int
	from *net.UDPAddr
}

var inPool = sync.Pool{New: func() any { return new([inPacketSize]byte) }}

// confirmed counts the allocation once pion told the client about it.
func (rc *relayConn) confirmed() {
	if rc.state.CompareAndSwap(allocNew, allocCounted) {
		rc.s.m.allocated(rc.f.transport)
		if rc.out != nil {
			rc.f.clients.Store(rc.client, rc)
		}
	}
}

func (rc *relayConn) ReadFrom(p []byte) (int, net.Addr, error) {
	for {
		if rc.localAt < len(rc.local) {
			pkt := rc.local[rc.localAt]
			rc.local[rc.localAt] = inPacket{}
			rc.localAt++
			n := copy(p, pkt.buf[:pkt.n])
			inPool.Put(pkt.buf)
			rc.fromPeer.Add(uint64(n))
			rc.pktsFromPeer.Add(1)
			return n, pkt.from, nil
		}
		if rc.takeInternal() {
			continue
		}
		// Nothing queued: send the batch before waiting for more.
		rc.flush()
		// Announce the wait before the last look, so that a delivery
		// either is seen here or sees waiting and wakes the read.
		rc.waiting.Store(true)
		if rc.takeInternal() {
			rc.waiting.Store(false)
			continue
		}
		n, ap, err := rc.uc.ReadFromUDPAddrPort(p)
		rc.waiting.Store(false)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() && !rc.closed.Load() {
				_ = rc.uc.SetReadDeadline(time.Time{}) // woken by deliver
				continue
			}
			return 0, nil, err
		}
		rc.fromPeer.Add(uint64(n))
		rc.pktsFromPeer.Add(1)
		if rc.addrs == nil {
			rc.addrs = make(map[netip.AddrPort]*net.UDPAddr)
		}
		return n, cachedAddr(rc.addrs, netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())), nil
	}
}

func (rc *relayConn) flush() {
	if rc.out != nil {
		rc.out.flush()
	}
}

// takeInternal moves queued deliveries to the reader's side.
func (rc *relayConn) takeInternal() bool {
	rc.inMu.Lock()
	defer rc.inMu.Unlock()
	if len(rc.in) == 0 {
		return false
	}
	rc.local, rc.in = rc.in, rc.local[:0]
	rc.localAt = 0
	return true
}

// deliver queues p from another of our relay sockets. It reports false
// when the packet was dropped (closed, or the queue is full).
func (rc *relayConn) deliver(from *net.UDPAddr, p []byte) bool {
	if rc.closed.Load() {
		return false
	}
	buf := inPool.Get().(*[inPacketSize]byte)
	n := copy(buf[:], p)
	rc.inMu.Lock()
	if len(rc.in) >= maxInternalQueue || rc.closed.Load() {
		rc.inMu.Unlock()
		inPool.Put(buf)
		return false
	}
	rc.in = append(rc.in, inPacket{buf: buf, n: n, from: from})
	rc.inMu.Unlock()
	if rc.waiting.Load() {
		_ = rc.uc.SetReadDeadline(time.Now())
	}
	return true
}

func (rc *relayConn) WriteTo(p []byte, addr net.Addr) (int, error) {
	ua, ok := addr.(*net.UDPAddr)
	if !ok {
		return 0, &net.AddrError{Err: "not a UDP address", Addr: addr.String()}
	}
	dst := ua.AddrPort()
	if peer := rc.s.localRelay(dst); peer != nil {
		if peer.deliver(rc.public, p) {
			rc.toPeer.Add(uint64(len(p)))
			rc.pktsToPeer.Add(1)
		} else {
			rc.s.m.internalDrops.Add(1)
		}
		return len(p), nil // a drop is silent to the sender, as with UDP
	}
	if rc.s.ownAddr(dst) {
		// Not a live relayed address of ours: the TURN port, another
		// service of the host, or a port no allocation holds. The
		// permission for the address was granted for the relayed ones.
		rc.s.m.peerDenied.Add(1)
		return len(p), nil
	}
	if rc.peerOut != nil {
		rc.peerOut.add(p, dst)
		rc.f.queuedForPeer(rc)
		rc.toPeer.Add(uint64(len(p)))
		rc.pktsToPeer.Add(1)
		return len(p), nil
	}
	n, err := rc.uc.WriteToUDPAddrPort(p, dst)
	if err == nil {
		rc.toPeer.Add(uint64(n))
		rc.pktsToPeer.Add(1)
	}
	return n, err
}

// localRelay returns the live relayConn announced at dst, if any.
func (s *Server) localRelay(dst netip.AddrPort) *relayConn {
	port := dst.Port()
	if port < s.opts.PortMin || port > s.opts.PortMax || dst.Addr().Unmap() != s.opts.PublicIP {
		return nil
	}
	return s.relays[port-s.opts.PortMin].Load()
}

// Close ends the allocation's socket; pion's allocation goroutine then
// deletes the allocation. Later calls return nil.
func (rc *relayConn) Close() error {
	var err error
	rc.closeOnce.Do(func() {
		rc.expire.Stop()
		rc.closed.Store(true)
		rc.s.relays[rc.port-rc.s.opts.PortMin].CompareAndSwap(rc, nil)
		if rc.out != nil {
			rc.f.clients.CompareAndDelete(rc.client, rc)
		}
		err = rc.uc.Close()
		rc.inMu.Lock()
		for _, pkt := range rc.in {
			inPool.Put(pkt.buf)
		}
		rc.in = nil
		rc.inMu.Unlock()
		rc.f.allocationEnded()
		if rc.state.Swap(allocClosed) == allocCounted {
			rc.s.m.deallocated(rc.f.transport)
		}
		rc.s.log.Debug("allocation closed", zap.String("id", rc.id), zap.Stringer("relay", rc.public),
			zap.Duration("age", time.Since(rc.created)),
			zap.Uint64("bytes_to_peer", rc.toPeer.Load()), zap.Uint64("bytes_from_peer", rc.fromPeer.Load()))
		rc.s.release(rc)
	})
	return err
}

func (rc *relayConn) LocalAddr() net.Addr                { return rc.public }
func (rc *relayConn) SetDeadline(t time.Time) error      { return rc.uc.SetDeadline(t) }
func (rc *relayConn) SetReadDeadline(t time.Time) error  { return rc.uc.SetReadDeadline(t) }
func (rc *relayConn) SetWriteDeadline(t time.Time) error { return rc.uc.SetWriteDeadline(t) }
