package peerconn

import (
	"net"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/pion/ice/v3"
	"github.com/pion/transport/v3"
)

// relayNet is a relay session's network: the UDP sockets pion opens for
// TURN through it are turnSockets (turnsock.go), listed here so that the
// session's conn can find the one under its selected pair.
type relayNet struct {
	transport.Net
	recv atomic.Pointer[receiver] // the WireGuard bind's, while attached
	// creds sign pion's TURN requests again with the newest credentials
	// (resign.go); tcp: the schemes of the TURN/TCP addresses, by the
	// host:port pion dials (turndial.go). Both set in newRelayNet.
	creds turnCreds
	tcp   map[string]*tcpScheme

	mu    sync.Mutex
	socks []*turnSocket
}

func (n *relayNet) ListenPacket(network, address string) (net.PacketConn, error) {
	c, err := n.Net.ListenPacket(network, address)
	if err != nil {
		return nil, err
	}
	uc, ok := c.(*net.UDPConn)
	if !ok {
		return c, nil // not a system socket (vnet): pion's path only
	}
	s := newTurnSocket(uc, &n.recv, n.remove)
	s.sign = newSigner(&n.creds)
	n.mu.Lock()
	n.socks = append(n.socks, s)
	n.mu.Unlock()
	return s, nil
}

func (n *relayNet) remove(s *turnSocket) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for i, x := range n.socks {
		if x == s {
			n.socks = append(n.socks[:i], n.socks[i+1:]...)
			return
		}
	}
}

// socket returns the socket whose allocation has the relayed address a.
func (n *relayNet) socket(a netip.AddrPort) *turnSocket {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, s := range n.socks {
		if s.relayedAddr() == a {
			return s
		}
	}
	return nil
}

func (n *relayNet) sockets() []*turnSocket {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]*turnSocket(nil), n.socks...)
}

// relayConn is what a relay session hands WireGuard: pion's ice.Conn,
// plus batch methods (wg/bind's BatchConn) that take the fast path over
// the selected pair's TURN/UDP socket when there is one.
type relayConn struct {
	*ice.Conn
	s *Session
}

// WriteBatch sends each of bufs as one message: as ChannelData with GSO
// when the selected pair's local candidate is a TURN/UDP allocation of
// this session with a confirmed channel to the remote, else one by one
// through pion.
func (c *relayConn) WriteBatch(bufs [][]byte) error {
	if c.closed() {
		return nil // relayclosed.go
	}
	if sock, server, ch, ok := c.s.fastRoute(); ok {
		if err := sock.writeChannelData(bufs, ch, server); err == nil || sock.closed.Load() {
			return err
		}
		// Any other error: pion's path may still work (it reports its own).
	}
	for _, p := range bufs {
		if _, err := c.Write(p); err != nil {
			return err
		}
	}
	return nil
}

// Receive makes the session's TURN/UDP sockets hand the WireGuard messages
// they read to fn, in order and in batches, instead of passing them through
// pion to Read; other messages still come from Read. maxMsg, the largest
// message fn takes, sizes the sockets' read buffers (minReadMessage at
// least). fn's slices are valid only during the call; fn is called by one
// goroutine per socket (pion's reader) and may block, which holds that
// socket's reading (and the STUN behind) up. The returned cancel undoes
// it, unless another Receive replaced fn since.
func (c *relayConn) Receive(maxMsg int, fn func(msgs [][]byte)) (cancel func()) {
	n := c.s.rnet
	if n == nil || fn == nil {
		return func() {}
	}
	r := &receiver{fn: fn, max: min(max(maxMsg, minReadMessage), 1<<16-1)}
	n.recv.Store(r)
	return func() { n.recv.CompareAndSwap(r, nil) }
}

// FastCounts reports how many messages took the fast path out and in.
func (c *relayConn) FastCounts() (out, in uint64) {
	if c.s.rnet == nil {
		return 0, 0
	}
	for _, s := range c.s.rnet.sockets() {
		out += s.fastOut.Load()
		in += s.fastIn.Load()
	}
	return out, in
}

// setPair records the selected pair (s.mu held) and, for a relay
// session whose local candidate is a TURN allocation, its addresses
// parsed, so that fastRoute does not parse them on every WriteBatch.
func (s *Session) setPair(p Pair) {
	s.pair = p
	s.relayLocal, s.relayRemote = netip.AddrPort{}, netip.AddrPort{}
	if s.rnet == nil || p.Local.Type != ice.CandidateTypeRelay.String() {
		return
	}
	local, err1 := netip.ParseAddrPort(p.Local.Address)
	remote, err2 := netip.ParseAddrPort(p.Remote.Address)
	if err1 == nil && err2 == nil {
		s.relayLocal, s.relayRemote = unmap(local), unmap(remote)
	}
}

// fastRoute finds the fast path of the selected pair, if it has one.
func (s *Session) fastRoute() (*turnSocket, netip.AddrPort, uint16, bool) {
	if s.rnet == nil {
		return nil, netip.AddrPort{}, 0, false
	}
	s.mu.Lock()
	local, remote, ok := s.relayLocal, s.relayRemote, s.connected
	s.mu.Unlock()
	if !ok || !local.IsValid() {
		return nil, netip.AddrPort{}, 0, false
	}
	sock := s.rnet.socket(local)
	if sock == nil {
		return nil, netip.AddrPort{}, 0, false
	}
	server, ch, ok := sock.route(remote)
	return sock, server, ch, ok
}
