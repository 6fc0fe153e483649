package relay

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/stun/v2"
	"github.com/pion/turn/v3"
	"go.uber.org/zap"

	"meshd/internal/udpgso"
)

// Client-side transports, as metric labels.
const (
	transportUDP = "udp"
	transportTCP = "tcp"
	transportTLS = "tls"
)

// front is the net.PacketConn pion's read loop serves: one UDP worker
// socket, or one TCP/TLS connection framed by turn.STUNConn. Between pion
// and the socket it
//   - reads and writes UDP with netip.AddrPort and hands pion one cached
//     *net.UDPAddr per client, so the per-packet path does not allocate
//     addresses;
//   - notes who sends an Allocate request, so that the relay address
//     generator pion calls next (on the same goroutine) can charge the
//     allocation to that credential;
//   - turns pion's 508 for an allocation refused by quota into the 486 the
//     RFC asks for, and pion's answers to a permission or channel refused
//     by the peer policy (no code, or 401) into 403 Forbidden; counts
//     requests and error responses.
type front struct {
	s         *Server
	transport string
	local     net.Addr

	udp *net.UDPConn // UDP worker, or:
	raw net.Conn     // TCP/TLS connection, read through stream
	str *turn.STUNConn

	// Owned by the read loop goroutine (pion calls ReadFrom and the
	// generator from one goroutine per PacketConn).
	addrs     map[netip.AddrPort]*net.UDPAddr
	batch     *readBatch   // UDP: recvmmsg
	dirty     []*relayConn // UDP: relay sockets with datagrams for peers queued
	pending   allocRequest
	lastAlloc *relayConn    // made for pending, not yet confirmed
	perm      permRequest   // the CreatePermission or ChannelBind being handled
	signed    signedRequest // the Refresh, CreatePermission or ChannelBind being handled

	refused atomic.Pointer[allocRequest] // the Allocate refused by quota
	allocs  atomic.Int32                 // live allocations made through this front
	idle    atomic.Bool                  // stream: a read deadline is armed

	// UDP: clients' allocations by client address, for batching their
	// ChannelData (see outBatch), when the socket can do UDP GSO.
	gso     atomic.Bool
	clients sync.Map // netip.AddrPort -> *relayConn

	closeOnce sync.Once
	doneOnce  sync.Once
}

// allocRequest is the authenticated Allocate request being handled.
type allocRequest struct {
	src      netip.AddrPort // UDP clients only
	tx       [stun.TransactionIDSize]byte
	username string
	id       string // credential id: the quota key
	realm    string
}

// signedRequest is the authenticated Refresh, CreatePermission or
// ChannelBind request being handled: when pion answers it with success,
// its credential passed the integrity check and counts as renewed.
type signedRequest struct {
	tx       [stun.TransactionIDSize]byte
	username string
}

// permRequest is the CreatePermission or ChannelBind request being
// handled, for the peer policy and its 403.
type permRequest struct {
	tx       [stun.TransactionIDSize]byte
	method   stun.Method
	username string
	realm    string
	bind     netip.AddrPort // ChannelBind: the peer's address and port
	denied   bool
}

var _ net.PacketConn = (*front)(nil)

const maxAddrCache = 4096

func (s *Server) newFront(transport string, uc *net.UDPConn, c net.Conn) *front {
	f := &front{s: s, transport: transport}
	if uc != nil {
		f.udp = uc
		f.local = uc.LocalAddr()
		f.addrs = make(map[netip.AddrPort]*net.UDPAddr)
		f.batch = newReadBatch(uc)
		f.batch.before = f.flushPeers
		f.gso.Store(udpgso.Supported(uc))
	} else {
		f.raw = c
		f.str = turn.NewSTUNConn(c)
		f.local = c.LocalAddr()
	}
	return f
}

// cachedAddr returns one immutable *net.UDPAddr per address. pion keeps
// the pointers it gets (in allocations' 5-tuples); nobody mutates them.
func cachedAddr(cache map[netip.AddrPort]*net.UDPAddr, ap netip.AddrPort) *net.UDPAddr {
	if a, ok := cache[ap]; ok {
		return a
	}
	if len(cache) >= maxAddrCache {
		clear(cache)
	}
	a := net.UDPAddrFromAddrPort(ap)
	cache[ap] = a
	return a
}

func (f *front) ReadFrom(p []byte) (int, net.Addr, error) {
	if f.udp != nil {
		n, ap, err := f.batch.read(p)
		if err != nil {
			return 0, nil, err
		}
		f.inspect(p[:n], ap)
		return n, cachedAddr(f.addrs, ap), nil
	}
	n, addr, err := f.str.ReadFrom(p)
	if err != nil {
		f.streamDone()
		return 0, nil, err
	}
	if n <= len(p) {
		f.inspect(p[:n], netip.AddrPort{})
	}
	f.armIdle()
	return n, addr, nil
}

// queuedForPeer notes that rc has datagrams for peers queued; they go out
// before the read loop's next recvmmsg. Read loop only.
func (f *front) queuedForPeer(rc *relayConn) {
	if !rc.dirty {
		rc.dirty = true
		f.dirty = append(f.dirty, rc)
	}
}

// flushPeers sends what the read loop queued for peers.
func (f *front) flushPeers() {
	for i, rc := range f.dirty {
		rc.peerOut.flush()
		rc.dirty = false
		f.dirty[i] = nil
	}
	f.dirty = f.dirty[:0]
}

// inspect looks at a STUN message from a client (ChannelData passes with
// one comparison).
func (f *front) inspect(b []byte, src netip.AddrPort) {
	if len(b) < stunHeader || b[0]&0xc0 != 0 {
		return
	}
	t := binary.BigEndian.Uint16(b[0:2])
	method, class := stunMethod(t), stunClass(t)
	f.s.m.request(method)
	if class != stun.ClassRequest {
		return
	}
	f.signed = signedRequest{}
	switch method {
	case stun.MethodCreatePermission, stun.MethodChannelBind:
		f.inspectPermission(b, method)
		return
	case stun.MethodRefresh:
		f.inspectRefresh(b)
		return
	case stun.MethodAllocate:
	default:
		return
	}
	f.pending = allocRequest{}
	m := &stun.Message{Raw: append([]byte(nil), b...)}
	if err := m.Decode(); err != nil {
		return
	}
	var user stun.Username
	var realm stun.Realm
	if user.GetFrom(m) != nil || realm.GetFrom(m) != nil {
		return
	}
	username := user.String()
	_, id, _ := strings.Cut(username, ":")
	f.pending = allocRequest{src: src, tx: m.TransactionID, username: username, id: id, realm: realm.String()}
}

// inspectPermission notes a CreatePermission or ChannelBind request.
func (f *front) inspectPermission(b []byte, method stun.Method) {
	f.perm = permRequest{}
	m := &stun.Message{Raw: append([]byte(nil), b...)}
	if err := m.Decode(); err != nil {
		return
	}
	var user stun.Username
	var realm stun.Realm
	if user.GetFrom(m) != nil || realm.GetFrom(m) != nil {
		return // unauthenticated: pion answers 401 before the policy
	}
	f.perm = permRequest{tx: m.TransactionID, method: method, username: user.String(), realm: realm.String()}
	f.signed = signedRequest{tx: m.TransactionID, username: user.String()}
	if method == stun.MethodChannelBind {
		var peer stun.XORMappedAddress
		if peer.GetFromAs(m, stun.AttrXORPeerAddress) == nil {
			if ip, ok := netip.AddrFromSlice(peer.IP); ok {
				f.perm.bind = netip.AddrPortFrom(ip.Unmap(), uint16(peer.Port))
			}
		}
	}
}

// inspectRefresh notes a Refresh request's credential.
func (f *front) inspectRefresh(b []byte) {
	m := &stun.Message{Raw: append([]byte(nil), b...)}
	if err := m.Decode(); err != nil {
		return
	}
	var user stun.Username
	if user.GetFrom(m) != nil {
		return
	}
	f.signed = signedRequest{tx: m.TransactionID, username: user.String()}
}

// renewed notes the credential of the request success answers, if it is
// the signed request being handled. Success responses are written by the
// read loop that handled the request.
func (f *front) renewed(success []byte) {
	r := f.signed
	if r.username == "" || len(success) < stunHeader || string(success[8:stunHeader]) != string(r.tx[:]) {
		return
	}
	f.signed = signedRequest{}
	f.s.accepted(r.username)
}

// permit is pion's PermissionHandler for this front, called while pion
// handles the request inspectPermission noted. On top of the address
// policy a channel to the relay's public address must lead to one of its
// live relayed addresses (a permission is for an address, a channel for
// an address and port).
func (f *front) permit(client net.Addr, peer net.IP) bool {
	ok := f.s.permit(client, peer)
	if b := f.perm.bind; ok && b.IsValid() && f.s.ownAddr(b) && f.s.localRelay(b) == nil {
		if ip, _ := netip.AddrFromSlice(peer); ip.Unmap() == b.Addr() {
			ok = false
			f.s.m.peerDenied.Add(1)
			f.s.log.Debug("channel denied: not a relayed address of this relay", zap.Stringer("client", client), zap.Stringer("peer", b))
		}
	}
	if !ok {
		f.perm.denied = true
	}
	return ok
}

func (f *front) WriteTo(p []byte, addr net.Addr) (int, error) {
	if len(p) >= stunHeader && p[0]&0xc0 == 0 {
		t := binary.BigEndian.Uint16(p[0:2])
		switch class := stunClass(t); {
		case class == stun.ClassErrorResponse:
			p = f.errorResponse(p, stunMethod(t))
		case class == stun.ClassSuccessResponse && stunMethod(t) == stun.MethodAllocate:
			// Written by the read loop that made the allocation.
			if rc := f.lastAlloc; rc != nil {
				f.lastAlloc = nil
				rc.confirmed()
			}
		case class == stun.ClassSuccessResponse:
			f.renewed(p)
		}
	}
	if f.udp != nil {
		ua, ok := addr.(*net.UDPAddr)
		if !ok {
			return 0, &net.AddrError{Err: "not a UDP address", Addr: addr.String()}
		}
		ap := ua.AddrPort()
		if len(p) >= 4 && p[0]&0xc0 == 0x40 && f.gso.Load() {
			// ChannelData, written by the client's allocation goroutine.
			if rc, ok := f.clients.Load(netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())); ok {
				rc := rc.(*relayConn)
				rc.out.add(p, rc.client)
				return len(p), nil
			}
		}
		return f.udp.WriteToUDPAddrPort(p, ap)
	}
	return f.raw.Write(p)
}

// errorResponse counts an error response and replaces pion's 508 for an
// allocation refused by quota with 486 (RFC 8656 section 7.2 step 10), and
// its answer to a peer the policy refused with 403 (section 9.1).
func (f *front) errorResponse(p []byte, method stun.Method) []byte {
	m := &stun.Message{Raw: append([]byte(nil), p...)}
	if err := m.Decode(); err != nil {
		return p
	}
	if r := f.perm; r.denied && r.method == method && r.tx == m.TransactionID {
		f.perm = permRequest{}
		forbidden, err := stun.Build(
			stun.NewTransactionIDSetter(m.TransactionID),
			stun.NewType(method, stun.ClassErrorResponse),
			stun.CodeForbidden,
			stun.NewRealm(f.s.opts.Realm),
			stun.NewLongTermIntegrity(r.username, r.realm, f.s.password(r.username)),
		)
		if err == nil {
			f.s.m.errorResponse(int(stun.CodeForbidden))
			return forbidden.Raw
		}
	}
	var code stun.ErrorCodeAttribute
	if code.GetFrom(m) != nil {
		return p
	}
	if method == stun.MethodAllocate && code.Code == stun.CodeInsufficientCapacity {
		if r := f.refused.Load(); r != nil && r.tx == m.TransactionID {
			f.refused.Store(nil)
			quota, err := stun.Build(
				stun.NewTransactionIDSetter(m.TransactionID),
				stun.NewType(stun.MethodAllocate, stun.ClassErrorResponse),
				stun.CodeAllocQuotaReached,
				stun.NewRealm(f.s.opts.Realm),
				stun.NewLongTermIntegrity(r.username, r.realm, f.s.password(r.username)),
			)
			if err == nil {
				p, code.Code = quota.Raw, stun.CodeAllocQuotaReached
			}
		}
	}
	f.s.m.errorResponse(int(code.Code))
	return p
}

// Close closes the socket or connection; pion's read loop then ends and
// closes the allocations made through it.
func (f *front) Close() error {
	var err error
	f.closeOnce.Do(func() {
		if f.udp != nil {
			err = f.udp.Close()
		} else {
			err = f.raw.Close()
		}
	})
	return err
}

func (f *front) LocalAddr() net.Addr { return f.local }

func (f *front) SetDeadline(t time.Time) error {
	if f.udp != nil {
		return f.udp.SetDeadline(t)
	}
	return f.raw.SetDeadline(t)
}

func (f *front) SetReadDeadline(t time.Time) error {
	if f.udp != nil {
		return f.udp.SetReadDeadline(t)
	}
	return f.raw.SetReadDeadline(t)
}

func (f *front) SetWriteDeadline(t time.Time) error {
	if f.udp != nil {
		return f.udp.SetWriteDeadline(t)
	}
	return f.raw.SetWriteDeadline(t)
}

// armIdle keeps a deadline on a stream without allocations, so that
// connections that never allocate, or whose allocations ended, go away.
func (f *front) armIdle() {
	if f.allocs.Load() > 0 {
		if f.idle.Swap(false) {
			_ = f.raw.SetReadDeadline(time.Time{})
		}
		return
	}
	f.idle.Store(true)
	_ = f.raw.SetReadDeadline(time.Now().Add(StreamIdleTimeout))
}

// allocationEnded is called when an allocation made through f closed.
func (f *front) allocationEnded() {
	if f.allocs.Add(-1) == 0 && f.raw != nil {
		f.idle.Store(true)
		_ = f.raw.SetReadDeadline(time.Now().Add(StreamIdleTimeout))
	}
}

// streamDone runs once when a stream's read loop gets its last error.
func (f *front) streamDone() {
	f.doneOnce.Do(func() {
		f.Close()
		f.s.mu.Lock()
		delete(f.s.streams, f)
		f.s.mu.Unlock()
		f.s.m.conns[f.transport].Add(-1)
		f.s.loopsWG.Done()
	})
}

// acceptLoop serves TURN on the TCP or TLS connections of ln.
func (s *Server) acceptLoop(ln net.Listener, transport string) {
	defer s.loopsWG.Done()
	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || isTemporary(err) {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				s.log.Warn("accept", zap.String("transport", transport), zap.Error(err), zap.Duration("retry_in", backoff))
				select {
				case <-time.After(backoff):
				case <-s.done:
					return
				}
				continue
			}
			s.log.Error("accept failed; no more TURN over "+transport, zap.Error(err))
			return
		}
		backoff = 0
		s.serveStream(c, transport)
	}
}

func isTemporary(err error) bool {
	var t interface{ Temporary() bool }
	return errors.As(err, &t) && t.Temporary()
}

// serveStream runs a pion server of its own for one TCP or TLS
// connection: pion's listener support frees allocations of closed
// connections under the wrong 5-tuple, and a server per connection gives
// the generator the connection it allocates for.
func (s *Server) serveStream(c net.Conn, transport string) {
	s.mu.Lock()
	if s.closing || len(s.streams) >= s.opts.MaxConns {
		full := !s.closing
		s.mu.Unlock()
		if full {
			s.m.connsRefused.Add(1)
		}
		c.Close()
		return
	}
	f := s.newFront(transport, nil, c)
	s.streams[f] = struct{}{}
	s.loopsWG.Add(1)
	s.mu.Unlock()
	s.m.conns[transport].Add(1)

	_ = c.SetReadDeadline(time.Now().Add(StreamIdleTimeout))
	f.idle.Store(true)
	_, err := turn.NewServer(turn.ServerConfig{
		PacketConnConfigs: []turn.PacketConnConfig{{PacketConn: f, RelayAddressGenerator: relayGen{f}, PermissionHandler: f.permit}},
		LoggerFactory:     s.pionLog,
		Realm:             s.opts.Realm,
		AuthHandler:       s.authenticate,
		InboundMTU:        streamInboundMTU,
	})
	if err != nil {
		s.log.Warn("serve TURN connection", zap.Stringer("remote", c.RemoteAddr()), zap.Error(err))
		f.streamDone()
	}
}

// STUN header fields (RFC 5389 section 6).
const stunHeader = 20

func stunMethod(t uint16) stun.Method {
	return stun.Method(t&0x000f | (t&0x00e0)>>1 | (t&0x3e00)>>2)
}

func stunClass(t uint16) stun.MessageClass {
	return stun.MessageClass((t>>4)&0x1 | (t>>7)&0x2)
}
