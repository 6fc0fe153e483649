package bind

import (
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/pion/transport/v3/deadline"
	"golang.zx2c4.com/wireguard/conn"
)

// STUNConn returns the net.PacketConn through which ICE uses the WireGuard
// socket: ReadFrom returns the STUN messages that arrived on it, WriteTo
// sends out of it. Give it to ice.NewUDPMuxDefault or
// ice.NewUniversalUDPMuxDefault.
//
// Reads never hold up WireGuard: STUN waits in a bounded queue and is
// dropped (and counted, see Drops) when the queue is full. Closing the
// returned conn (the mux does that when it closes) detaches it and leaves
// the WireGuard socket open; the next call returns a fresh one. Its
// LocalAddr is the unspecified address with the WireGuard port.
func (b *Bind) STUNConn() net.PacketConn {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.stun != nil && !b.stun.isClosed() {
		return b.stun
	}
	s := &stunConn{
		b:        b,
		q:        make(chan stunPacket, b.opts.STUNQueue),
		done:     make(chan struct{}),
		deadline: deadline.New(),
	}
	if b.stopped {
		s.closeOnce.Do(func() { close(s.done) })
	}
	b.stun = s
	return s
}

type stunPacket struct {
	data []byte
	from netip.AddrPort
}

func (b *Bind) deliverSTUN(p []byte, ep conn.Endpoint) {
	b.mu.Lock()
	s := b.stun
	b.mu.Unlock()
	se, ok := ep.(*conn.StdNetEndpoint)
	if s == nil || !ok {
		b.stunDrops.Add(1)
		return
	}
	pkt := stunPacket{data: append([]byte(nil), p...), from: se.AddrPort}
	select {
	case s.q <- pkt:
	default:
		b.stunDrops.Add(1)
	}
}

// stunConn is the net.PacketConn of STUNConn.
type stunConn struct {
	b         *Bind
	q         chan stunPacket
	done      chan struct{}
	closeOnce sync.Once
	deadline  *deadline.Deadline
}

var _ net.PacketConn = (*stunConn)(nil)

func (s *stunConn) isClosed() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// ReadFrom returns the next STUN message and its sender (a *net.UDPAddr).
func (s *stunConn) ReadFrom(p []byte) (int, net.Addr, error) {
	select {
	case pkt := <-s.q:
		n := copy(p, pkt.data)
		return n, net.UDPAddrFromAddrPort(pkt.from), nil
	case <-s.done:
		return 0, nil, net.ErrClosed
	case <-s.deadline.Done():
		return 0, nil, timeoutError{}
	}
}

// WriteTo sends p out of the WireGuard socket to addr (a *net.UDPAddr).
func (s *stunConn) WriteTo(p []byte, addr net.Addr) (int, error) {
	if s.isClosed() {
		return 0, net.ErrClosed
	}
	ua, ok := addr.(*net.UDPAddr)
	if !ok {
		return 0, fmt.Errorf("bind: stun write to %v: not a UDP address", addr)
	}
	if err := s.b.sendTo(p, ua.AddrPort()); err != nil {
		return 0, fmt.Errorf("bind: stun write to %v: %w", addr, err)
	}
	return len(p), nil
}

// Close detaches the conn; the WireGuard socket stays open.
func (s *stunConn) Close() error {
	s.closeOnce.Do(func() { close(s.done) })
	return nil
}

// LocalAddr is [::]:port, or 0.0.0.0:port when the bind has no IPv6
// socket: the form pion's UDP mux expands to all local addresses of those
// families.
func (s *stunConn) LocalAddr() net.Addr {
	ip := net.IPv4zero
	if s.b.hasV6.Load() {
		ip = net.IPv6unspecified
	}
	return &net.UDPAddr{IP: ip, Port: int(s.b.Port())}
}

func (s *stunConn) SetDeadline(t time.Time) error {
	s.deadline.Set(t)
	return nil
}

func (s *stunConn) SetReadDeadline(t time.Time) error {
	s.deadline.Set(t)
	return nil
}

// SetWriteDeadline is accepted and ignored: writes never block for long
// (they are UDP sends).
func (s *stunConn) SetWriteDeadline(time.Time) error { return nil }

type timeoutError struct{}

func (timeoutError) Error() string   { return "bind: stun read: i/o timeout" }
func (timeoutError) Timeout() bool   { return true }
func (timeoutError) Temporary() bool { return true }
