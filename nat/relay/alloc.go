package relay

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"syscall"
	"time"

	"github.com/pion/turn/v3"
	"go.uber.org/zap"

	"meshd/internal/turncred"
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
	// pion checked the credential and the message's integrity before
	// asking for the relay socket.
	exp, _, expErr := turncred.Parse(req.username)
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
	if expErr == nil {
		s.acceptedLocked(req.id, exp)
	}
	rc := &relayConn{s: s, f: f, id: req.id, client: req.src, created: time.Now()}
	if f.udp != nil && req.src.IsValid() {
		rc.out = newOutBatch(s, f.udp, &f.gso, req.src)
	}
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
	if f.udp != nil {
		rc.peerOut = newOutBatch(s, uc, &s.relayGSO, netip.AddrPort{})
	}
	rc.public = &net.UDPAddr{IP: s.opts.PublicIP.AsSlice(), Port: port}
	rc.port = uint16(port)
	s.relays[port-int(s.opts.PortMin)].Store(rc)
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
		delete(s.expiry, rc.id)
	}
	s.m.closedToPeer.Add(rc.toPeer.Load())
	s.m.closedFromPeer.Add(rc.fromPeer.Load())
	s.m.closedPktsToPeer.Add(rc.pktsToPeer.Load())
	s.m.closedPktsFromPeer.Add(rc.pktsFromPeer.Load())
	s.mu.Unlock()
	s.allocsWG.Done()
}

// portRange binds relay sockets in [min, max] on bind and announces them
// on public.
type portRange struct {
	public   netip.Addr
	bind     netip.Addr
	min, max uint16
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
	return &portRange{public: public, bind: bind, min: lo, max: hi}, nil
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
