package relay

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/pion/turn/v3"
	"go.uber.org/zap"
)

// relayGen is the turn.RelayAddressGenerator of one front. pion calls it
// from the front's read loop while it handles the Allocate request the
// front just read, which is how the allocation finds its credential.
type relayGen struct{ f *front }

var _ turn.RelayAddressGenerator = relayGen{}

func (relayGen) Validate() error { return nil }

func (g relayGen) AllocatePacketConn(network string, requestedPort int) (net.PacketConn, net.Addr, error) {
	return g.f.s.allocate(g.f, network, requestedPort)
}

func (relayGen) AllocateConn(string, int) (net.Conn, net.Addr, error) {
	return nil, nil, ErrNoTCPRelay
}

// allocate checks the quotas, binds a relay socket and accounts for it.
func (s *Server) allocate(f *front, network string, requestedPort int) (net.PacketConn, net.Addr, error) {
	if network != "udp4" {
		return nil, nil, fmt.Errorf("relay: allocate %s: only udp4 relays", network)
	}
	req := f.pending
	s.mu.Lock()
	switch {
	case s.closing:
		s.mu.Unlock()
		return nil, nil, net.ErrClosed
	case len(s.allocs) >= s.opts.MaxAllocations:
		s.mu.Unlock()
		s.m.refused("capacity")
		s.log.Warn("allocation refused: relay at capacity", zap.Int("max_allocations", s.opts.MaxAllocations))
		return nil, nil, ErrCapacity
	case s.users[req.id] >= s.opts.MaxAllocationsPerUser:
		n := s.users[req.id]
		s.mu.Unlock()
		f.refused.Store(&req)
		s.m.refused("quota")
		s.log.Info("allocation refused: quota", zap.String("id", req.id), zap.Int("allocations", n))
		return nil, nil, ErrQuota
	}
	s.users[req.id]++
	rc := &relayConn{s: s, f: f, id: req.id, created: time.Now()}
	s.allocs[rc] = struct{}{}
	s.allocsWG.Add(1)
	s.mu.Unlock()

	uc, port, err := s.ports.listen(requestedPort)
	if err != nil {
		s.release(rc)
		s.m.refused("ports")
		s.log.Warn("allocation refused", zap.Error(err))
		return nil, nil, err
	}
	rc.uc = uc
	rc.public = &net.UDPAddr{IP: s.opts.PublicIP.AsSlice(), Port: port}
	rc.hairpin = s.ports.hairpin
	f.allocs.Add(1)
	rc.expire = time.AfterFunc(s.opts.MaxLifetime, func() {
		s.log.Info("allocation reached its maximum lifetime", zap.String("id", rc.id), zap.Stringer("relay", rc.public), zap.Duration("max_lifetime", s.opts.MaxLifetime))
		rc.Close()
	})
	// Counted when pion answers the request with success: pion also
	// opens and closes sockets here to find an even port.
	f.lastAlloc = rc
	s.log.Debug("allocation", zap.String("id", req.id), zap.String("transport", f.transport), zap.Stringer("relay", rc.public))
	return rc, rc.public, nil
}

// release undoes the accounting of an allocation.
func (s *Server) release(rc *relayConn) {
	s.mu.Lock()
	delete(s.allocs, rc)
	if s.users[rc.id]--; s.users[rc.id] <= 0 {
		delete(s.users, rc.id)
	}
	s.m.closedToPeer.Add(rc.toPeer.Load())
	s.m.closedFromPeer.Add(rc.fromPeer.Load())
	s.m.closedPktsToPeer.Add(rc.pktsToPeer.Load())
	s.m.closedPktsFromPeer.Add(rc.pktsFromPeer.Load())
	s.mu.Unlock()
	s.allocsWG.Done()
}

// relayConn is an allocation's relay socket. pion reads peers' packets
// from it in the allocation's goroutine and writes clients' packets to it
// from the front's read loop; it counts both.
type relayConn struct {
	s       *Server
	f       *front
	id      string
	created time.Time
	uc      *net.UDPConn
	public  *net.UDPAddr
	hairpin *hairpin
	expire  *time.Timer

	// state: allocNew until pion confirmed the allocation to the client,
	// then allocCounted (in the gauges), allocClosed at the end.
	state atomic.Int32

	toPeer, fromPeer         atomic.Uint64
	pktsToPeer, pktsFromPeer atomic.Uint64

	addrs map[netip.AddrPort]*net.UDPAddr // read goroutine only

	closeOnce sync.Once
}

var _ net.PacketConn = (*relayConn)(nil)

const (
	allocNew = iota
	allocCounted
	allocClosed
)

// confirmed counts the allocation once pion told the client about it.
func (rc *relayConn) confirmed() {
	if rc.state.CompareAndSwap(allocNew, allocCounted) {
		rc.s.m.allocated(rc.f.transport)
	}
}

func (rc *relayConn) ReadFrom(p []byte) (int, net.Addr, error) {
	n, ap, err := rc.uc.ReadFromUDPAddrPort(p)
	if err != nil {
		return 0, nil, err
	}
	ap = rc.hairpin.fromPeer(ap)
	rc.fromPeer.Add(uint64(n))
	rc.pktsFromPeer.Add(1)
	if rc.addrs == nil {
		rc.addrs = make(map[netip.AddrPort]*net.UDPAddr)
	}
	return n, cachedAddr(rc.addrs, ap), nil
}

func (rc *relayConn) WriteTo(p []byte, addr net.Addr) (int, error) {
	ua, ok := addr.(*net.UDPAddr)
	if !ok {
		return 0, &net.AddrError{Err: "not a UDP address", Addr: addr.String()}
	}
	n, err := rc.uc.WriteToUDPAddrPort(p, rc.hairpin.toPeer(ua.AddrPort()))
	if err == nil {
		rc.toPeer.Add(uint64(n))
		rc.pktsToPeer.Add(1)
	}
	return n, err
}

// Close ends the allocation's socket; pion's allocation goroutine then
// deletes the allocation. Later calls return nil.
func (rc *relayConn) Close() error {
	var err error
	rc.closeOnce.Do(func() {
		rc.expire.Stop()
		err = rc.uc.Close()
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

// portRange binds relay sockets in [min, max] on bind and announces them
// on public.
type portRange struct {
	public   netip.Addr
	bind     netip.Addr
	min, max uint16
	hairpin  *hairpin
}

func newPortRange(public, bind netip.Addr, lo, hi uint16) (*portRange, error) {
	local := isLocal(public)
	if !bind.IsValid() {
		bind = netip.IPv4Unspecified()
		if local {
			bind = public
		}
	}
	bind = bind.Unmap()
	if !bind.Is4() {
		return nil, fmt.Errorf("relay: relay bind address %s: want IPv4", bind)
	}
	pr := &portRange{public: public, bind: bind, min: lo, max: hi}
	if !local {
		// Packets from one of our relay ports to another, addressed to
		// the public IP, would leave for a NAT that may not hairpin.
		pr.hairpin = &hairpin{public: public, loopback: netip.AddrFrom4([4]byte{127, 0, 0, 1}), min: lo, max: hi}
	}
	return pr, nil
}

// isLocal reports whether ip is assigned to this host.
func isLocal(ip netip.Addr) bool {
	c, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip, 0)))
	if err != nil {
		return false
	}
	c.Close()
	return true
}

const portAttempts = 64

// listen binds a relay socket: on port if non-zero (an EVEN-PORT
// reservation), else on a random free port of the range.
func (pr *portRange) listen(port int) (*net.UDPConn, int, error) {
	try := func(p int) (*net.UDPConn, error) {
		uc, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(pr.bind, uint16(p))))
		if err != nil {
			return nil, err
		}
		tuneUDP(uc)
		return uc, nil
	}
	if port != 0 {
		if port < int(pr.min) || port > int(pr.max) {
			return nil, 0, fmt.Errorf("%w: requested port %d outside %d-%d", ErrNoPorts, port, pr.min, pr.max)
		}
		uc, err := try(port)
		if err != nil {
			return nil, 0, fmt.Errorf("%w: %v", ErrNoPorts, err)
		}
		return uc, port, nil
	}
	size := int(pr.max) - int(pr.min) + 1
	var lastErr error
	for i := 0; i < min(portAttempts, size); i++ {
		p := int(pr.min) + rand.IntN(size)
		uc, err := try(p)
		if err == nil {
			return uc, p, nil
		}
		lastErr = err
		if !errors.Is(err, syscall.EADDRINUSE) {
			break
		}
	}
	return nil, 0, fmt.Errorf("%w (%d-%d on %s): %v", ErrNoPorts, pr.min, pr.max, pr.bind, lastErr)
}

// hairpin maps traffic between two of our own relay sockets onto
// loopback when the public IP is not local (1:1 NAT), and the source back
// to the public IP on the receiving side, so permissions still match. nil
// means no mapping.
type hairpin struct {
	public, loopback netip.Addr
	min, max         uint16
}

func (h *hairpin) toPeer(ap netip.AddrPort) netip.AddrPort {
	if h == nil || ap.Addr().Unmap() != h.public || ap.Port() < h.min || ap.Port() > h.max {
		return ap
	}
	return netip.AddrPortFrom(h.loopback, ap.Port())
}

func (h *hairpin) fromPeer(ap netip.AddrPort) netip.AddrPort {
	if h == nil || ap.Addr() != h.loopback || ap.Port() < h.min || ap.Port() > h.max {
		return ap
	}
	return netip.AddrPortFrom(h.public, ap.Port())
}
