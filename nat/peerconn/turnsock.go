package peerconn

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/stun/v2"
	"golang.org/x/net/ipv4"

	"meshd/internal/udpgso"
)

// The fast path of a relay session over TURN/UDP.
//
// pion's TURN client moves one packet per system call and hands each
// through three goroutines before ice.Conn.Read returns it, so a relayed
// tunnel is capped by per-packet costs, with every packet also crossing the
// kernel's stack on its own. The client's UDP socket is opened through the
// session's network (relayNet), so it is a turnSocket of ours: it watches
// what pion sends and receives on it (the TURN server's address, the
// allocation's relayed address, the channels pion binds), and WireGuard's
// messages take a path beside pion's:
//
//   - out: a batch of WireGuard messages for the selected pair's remote
//     becomes ChannelData on the channel pion bound to that remote, sent to
//     the TURN server with one UDP GSO write (turnSocket.writeChannelData);
//   - in: ChannelData from the server whose payload is a WireGuard message
//     goes straight to the receiver (the WireGuard bind), everything else
//     (STUN: pion's allocation, permission and channel refreshes, ICE's
//     consent checks) to pion; while WireGuard messages come, the socket
//     is read with recvmmsg (Linux), else with plain reads into pion's
//     buffer. The receiver may block (WireGuard's queue is full), which
//     holds the STUN behind its messages up, never drops it.
//
// bench/NOTES.md has the figures of this path against pion's (throughput
// and the agents' CPU per byte); BenchmarkRelayed measures it.
//
// pion keeps using the allocation as before: ICE's consent checks go
// through pion and keep its permission and channel-binding refreshes
// going, and the fast path only uses a channel the server confirmed less
// than channelLifetime ago; otherwise (or when pion picked another pair)
// packets take pion's path.

const (
	// channelLifetime: RFC 8656 channel bindings last 10 minutes unless
	// refreshed (pion refreshes every 5 minutes on a send through it).
	channelLifetime = 9 * time.Minute
	// readBatchSize datagrams per recvmmsg (Linux), each in a buffer of
	// the receiver's largest message plus readSlack: room for ChannelData's
	// header and padding, or for a Data indication around the message
	// (pion's path before the channel is bound). TURN's own answers are far
	// smaller. A larger datagram is cut by the kernel and dropped.
	readBatchSize = 32
	readSlack     = 128
	// minReadMessage: read buffers are never smaller than this plus
	// readSlack, whatever the receiver asks for (TURN's answers fit).
	minReadMessage = 1024
	// GSO: segments and bytes per send.
	maxGSOSegments = 64
	maxGSOBytes    = 65000
)

// channel is a channel binding the server confirmed.
type channel struct {
	num uint16
	at  time.Time // last success
}

type pendingBind struct {
	num  uint16
	peer netip.AddrPort
}

// receiver is where a turnSocket hands WireGuard messages; see
// relayConn.Receive.
type receiver struct {
	fn  func([][]byte)
	max int // largest message fn takes
}

// turnSocket is the UDP socket between one of pion's TURN clients and its
// server. pion reads it (ReadFrom, from its client's one read goroutine)
// and writes it (WriteTo); the fast path writes it too
// (writeChannelData).
type turnSocket struct {
	*net.UDPConn
	recv    *atomic.Pointer[receiver] // shared by the session's sockets
	onClose func(*turnSocket)
	sign    *signer // nil: requests go out as pion signed them

	mu       sync.Mutex
	server   netip.AddrPort // the TURN server: where pion sends
	relayed  netip.AddrPort // the allocation's relayed address
	pending  map[[stun.TransactionIDSize]byte]pendingBind
	channels map[netip.AddrPort]channel

	// Read side: only pion's read goroutine.
	batch  bool // may read with recvmmsg (batchReads when made)
	pc     *ipv4.PacketConn
	rb     *readBatch // while reading batches
	n, i   int        // rb.msgs[i:n] are still to be handled
	wgSeen bool       // the current batch held a WireGuard message
	fast   [][]byte
	// batching: rb != nil; batchStarts: how often it became so (tests).
	batching    atomic.Bool
	batchStarts atomic.Uint64

	// Write side (fast path).
	wmu    sync.Mutex
	wbuf   []byte
	gso    atomic.Bool
	closed atomic.Bool

	// Counters: messages that took the fast path each way; datagrams
	// dropped because they did not fit a read buffer.
	fastOut, fastIn, truncated atomic.Uint64

	rtt relayRTT // the relayed path's round trip (relayrtt.go)
}

func newTurnSocket(uc *net.UDPConn, recv *atomic.Pointer[receiver], onClose func(*turnSocket)) *turnSocket {
	s := &turnSocket{
		UDPConn:  uc,
		recv:     recv,
		onClose:  onClose,
		pending:  make(map[[stun.TransactionIDSize]byte]pendingBind),
		channels: make(map[netip.AddrPort]channel),
		pc:       ipv4.NewPacketConn(uc),
		batch:    batchReads,
	}
	s.gso.Store(udpgso.Supported(uc))
	return s
}

// Close closes the socket (pion closes it with its candidate).
func (s *turnSocket) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	if s.onClose != nil {
		s.onClose(s)
	}
	return s.UDPConn.Close()
}

// WriteTo is pion's write: signed again with the newest credential if it
// is an authenticated TURN request (resign.go), noted, then sent.
func (s *turnSocket) WriteTo(p []byte, addr net.Addr) (int, error) {
	out := s.sign.out(p)
	if ua, ok := addr.(*net.UDPAddr); ok {
		s.sniffOut(out, unmap(ua.AddrPort()))
	}
	if _, err := s.UDPConn.WriteTo(out, addr); err != nil {
		return 0, err
	}
	return len(p), nil
}

// ReadFrom is pion's read. Without a receiver it is a plain read into
// pion's buffer. With one, the WireGuard messages it reads go to the
// receiver and the rest is returned; once a WireGuard message came, it
// reads batches (recvmmsg, on Linux) until a batch holds none (an idle
// tunnel, consent checks only), when it gives the batch's buffers back and
// reads plainly again. The receiver is looked up after each read, so a
// message read while it was being set or cleared goes the right way.
func (s *turnSocket) ReadFrom(p []byte) (int, net.Addr, error) {
	for {
		if s.closed.Load() {
			// What a batch still holds is not handed out after Close
			// (pion would handle it after its client closed).
			s.endBatches()
			return 0, nil, net.ErrClosed
		}
		if s.i >= s.n && (s.rb == nil || s.recv.Load() == nil) {
			s.endBatches()
			n, addr, err := s.UDPConn.ReadFrom(p)
			if err != nil {
				return n, addr, err
			}
			ua, ok := addr.(*net.UDPAddr)
			if !ok {
				return n, addr, nil
			}
			from := unmap(ua.AddrPort())
			if r := s.recv.Load(); r != nil && from == s.serverAddr() {
				if wg, ok := wireGuardPayload(p[:n]); ok {
					s.fast = append(s.fast, wg)
					s.flushFast(r)
					if s.batch {
						s.startBatches(r)
					}
					continue
				}
			}
			s.sniffIn(p[:n], from)
			return n, addr, nil
		}
		if s.i >= s.n {
			n, err := s.pc.ReadBatch(s.rb.msgs, 0)
			if err != nil {
				return 0, nil, err
			}
			s.n, s.i, s.wgSeen = n, 0, false
		}
		r, server := s.recv.Load(), s.serverAddr()
		for s.i < s.n {
			m := &s.rb.msgs[s.i]
			s.i++
			ua, ok := m.Addr.(*net.UDPAddr)
			if !ok {
				continue
			}
			if m.Flags&msgTrunc != 0 {
				s.truncated.Add(1)
				continue
			}
			from := unmap(ua.AddrPort())
			d := m.Buffers[0][:m.N]
			if r != nil && from == server {
				if wg, ok := wireGuardPayload(d); ok {
					s.fast = append(s.fast, wg)
					s.wgSeen = true
					continue
				}
			}
			s.flushFast(r)
			if len(d) > len(p) {
				continue
			}
			s.sniffIn(d, from)
			n := copy(p, d)
			if s.i == s.n && !s.wgSeen {
				s.endBatches()
			}
			return n, ua, nil
		}
		s.flushFast(r)
		if !s.wgSeen {
			s.endBatches()
		}
	}
}

// readBatch is the buffers of a socket's batch reads.
type readBatch struct {
	msgs []ipv4.Message
	slot int // size of each message's buffer
}

// readBatches keeps the buffers of sockets that went back to plain reads
// (48 KiB each on a 1280-byte MTU) for the next one that needs them; the
// GC empties it when no tunnel is busy.
var readBatches sync.Pool

// startBatches makes the reads batches, with buffers for r's messages.
func (s *turnSocket) startBatches(r *receiver) {
	slot := r.max + readSlack
	if s.rb != nil && s.rb.slot == slot {
		return
	}
	s.endBatches()
	if rb, ok := readBatches.Get().(*readBatch); ok && rb.slot == slot {
		s.rb = rb
	} else {
		rb = &readBatch{msgs: make([]ipv4.Message, readBatchSize), slot: slot}
		for i := range rb.msgs {
			rb.msgs[i].Buffers = [][]byte{make([]byte, slot)}
		}
		s.rb = rb
	}
	s.batching.Store(true)
	s.batchStarts.Add(1)
}

// endBatches makes the reads plain again and gives the buffers back.
func (s *turnSocket) endBatches() {
	if s.rb == nil {
		return
	}
	for i := range s.rb.msgs {
		s.rb.msgs[i].Addr = nil
	}
	readBatches.Put(s.rb)
	s.rb, s.n, s.i = nil, 0, 0
	s.batching.Store(false)
}

func (s *turnSocket) serverAddr() netip.AddrPort {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.server
}

// flushFast hands what the read collected to the receiver.
func (s *turnSocket) flushFast(r *receiver) {
	if len(s.fast) == 0 {
		return
	}
	s.fastIn.Add(uint64(len(s.fast)))
	if r != nil {
		r.fn(s.fast)
	}
	clear(s.fast)
	s.fast = s.fast[:0]
}

// wireGuardPayload returns the payload of a ChannelData message if it is a
// WireGuard message (type 1 to 4, then three zero bytes; never STUN, whose
// first byte is 0 or 1 and second never 0 for a response).
func wireGuardPayload(d []byte) ([]byte, bool) {
	if len(d) < 8 || d[0]&0xc0 != 0x40 {
		return nil, false
	}
	l := int(binary.BigEndian.Uint16(d[2:4]))
	if l < 4 || 4+l > len(d) {
		return nil, false
	}
	p := d[4 : 4+l]
	if p[0] < 1 || p[0] > 4 || p[1] != 0 || p[2] != 0 || p[3] != 0 {
		return nil, false
	}
	return p, true
}

// sniffOut notes the server and ChannelBind requests in what pion sends.
func (s *turnSocket) sniffOut(p []byte, to netip.AddrPort) {
	s.rtt.out(p)
	t, ok := stunType(p)
	if !ok {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.server.IsValid() || t == stunType0(stun.MethodAllocate, stun.ClassRequest) {
		s.server = to
	}
	if t != stunType0(stun.MethodChannelBind, stun.ClassRequest) {
		return
	}
	m := &stun.Message{Raw: append([]byte(nil), p...)}
	if m.Decode() != nil {
		return
	}
	num, err := m.Get(stun.AttrChannelNumber)
	if err != nil || len(num) < 2 {
		return
	}
	var peer stun.XORMappedAddress
	if peer.GetFromAs(m, stun.AttrXORPeerAddress) != nil {
		return
	}
	ap, ok := netip.AddrFromSlice(peer.IP)
	if !ok {
		return
	}
	if len(s.pending) >= 64 {
		clear(s.pending) // answers long overdue
	}
	s.pending[m.TransactionID] = pendingBind{num: binary.BigEndian.Uint16(num), peer: netip.AddrPortFrom(ap.Unmap(), uint16(peer.Port))}
}

// sniffIn notes the answers to Allocate and ChannelBind, and the server's
// error answers for the signer.
func (s *turnSocket) sniffIn(p []byte, from netip.AddrPort) {
	s.rtt.in(p)
	t, ok := stunType(p)
	if !ok {
		return
	}
	if p[1]&0x10 != 0 && p[0]&0x01 != 0 && from == s.serverAddr() {
		s.sign.in(p)
	}
	allocOK := stunType0(stun.MethodAllocate, stun.ClassSuccessResponse)
	bindOK := stunType0(stun.MethodChannelBind, stun.ClassSuccessResponse)
	bindErr := stunType0(stun.MethodChannelBind, stun.ClassErrorResponse)
	if t != allocOK && t != bindOK && t != bindErr {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if from != s.server {
		return
	}
	var id [stun.TransactionIDSize]byte
	copy(id[:], p[8:20])
	switch t {
	case allocOK:
		m := &stun.Message{Raw: append([]byte(nil), p...)}
		if m.Decode() != nil {
			return
		}
		var ra stun.XORMappedAddress
		if ra.GetFromAs(m, stun.AttrXORRelayedAddress) == nil {
			if a, ok := netip.AddrFromSlice(ra.IP); ok {
				s.relayed = netip.AddrPortFrom(a.Unmap(), uint16(ra.Port))
			}
		}
	case bindOK:
		if pb, ok := s.pending[id]; ok {
			delete(s.pending, id)
			s.channels[pb.peer] = channel{num: pb.num, at: time.Now()}
		}
	case bindErr:
		if pb, ok := s.pending[id]; ok {
			delete(s.pending, id)
			delete(s.channels, pb.peer)
		}
	}
}

func stunType0(m stun.Method, c stun.MessageClass) uint16 {
	return stun.NewType(m, c).Value()
}

// relayedAddr returns the allocation's relayed address once known.
func (s *turnSocket) relayedAddr() netip.AddrPort {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.relayed
}

// route returns the server and the channel bound to peer, if the server
// confirmed it recently enough.
func (s *turnSocket) route(peer netip.AddrPort) (netip.AddrPort, uint16, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.channels[peer]
	if !ok || time.Since(c.at) > channelLifetime || !s.server.IsValid() {
		return netip.AddrPort{}, 0, false
	}
	return s.server, c.num, true
}

// writeChannelData sends each of bufs as ChannelData on channel ch to
// server, runs of equal size as one GSO write.
func (s *turnSocket) writeChannelData(bufs [][]byte, ch uint16, server netip.AddrPort) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if s.wbuf == nil {
		s.wbuf = make([]byte, 0, maxGSOBytes)
	}
	buf, seg, n := s.wbuf[:0], 0, 0
	flush := func() error {
		if n == 0 {
			return nil
		}
		err := s.send(buf, seg, n, server)
		buf, seg, n = buf[:0], 0, 0
		return err
	}
	for _, p := range bufs {
		size := 4 + (len(p)+3)&^3
		if size > maxGSOBytes {
			return errors.New("peerconn: message too large for channel data")
		}
		if n > 0 && (size > seg || n == maxGSOSegments || len(buf)+size > maxGSOBytes) {
			if err := flush(); err != nil {
				return err
			}
		}
		if n == 0 {
			seg = size
		}
		buf = binary.BigEndian.AppendUint16(buf, ch)
		buf = binary.BigEndian.AppendUint16(buf, uint16(len(p)))
		buf = append(buf, p...)
		for len(buf)%4 != 0 {
			buf = append(buf, 0)
		}
		n++
		if size < seg { // a shorter segment ends a GSO batch
			if err := flush(); err != nil {
				return err
			}
		}
	}
	err := flush()
	s.wbuf = buf[:0]
	if err == nil {
		s.fastOut.Add(uint64(len(bufs)))
	}
	return err
}

// send sends n segments of seg bytes (the last may be shorter) in buf.
func (s *turnSocket) send(buf []byte, seg, n int, to netip.AddrPort) error {
	if n > 1 && s.gso.Load() {
		err := udpgso.Send(s.UDPConn, buf, seg, to)
		if err == nil {
			return nil
		}
		if !errors.Is(err, udpgso.ErrUnsupported) {
			return err
		}
		s.gso.Store(false)
	}
	for off := 0; off < len(buf); off += seg {
		if _, err := s.UDPConn.WriteToUDPAddrPort(buf[off:min(off+seg, len(buf))], to); err != nil {
			return err
		}
	}
	return nil
}

func unmap(ap netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}
