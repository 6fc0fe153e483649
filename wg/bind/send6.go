package bind

import (
	"errors"
	"net"
	"net/netip"
	"reflect"
	"sync"
	"sync/atomic"

	"golang.org/x/net/ipv6"
	"golang.zx2c4.com/wireguard/conn"

	"meshd/internal/udpgso"
)

// IPv6 sends bypass StdNetBind.Send, whose version in go.mod sends IPv6
// datagrams to a wrong address once IPv4 ones went out of the same bind: it
// reuses pooled *net.UDPAddr values and copies the destination before
// resizing the IP slice, so after an IPv4 send (slice length 4) only the
// first 4 bytes of the next IPv6 destination are written and the other 12
// are left from an earlier one (upstream: WireGuard/wireguard-go pull
// request #135, open). On a dual-stack mesh that is every IPv6 path, since
// ICE talks to IPv4 STUN servers from the same socket: the agent lost
// first handshakes on IPv6 host pairs this way (to fd00::2, a datagram
// went to fd00::). Remove this file once the dependency has the fix.
//
// The IPv6 socket is StdNetBind's own (read once after Open through
// reflect; receiving stays StdNetBind's). Where the kernel has UDP GSO, a
// run of equal-sized packets (the last may be shorter) goes out as one
// sendmsg with UDP_SEGMENT, as StdNetBind does for IPv4: the stack is
// crossed once per run, not once per packet, which is most of the cost of
// a bulk transfer. Without GSO each packet is its own datagram, many per
// sendmmsg. The source-address cmsg StdNetBind would add is omitted; it
// never has one here (its receive path drops IPV6_PKTINFO, so endpoints
// carry no source).

// GSO bounds of one sendmsg: the kernel's limit of segments, and the
// largest IPv6 payload (a UDP header and the data).
const (
	gsoMaxSegments = 64
	gsoMaxBytes    = 65535 - 8
)

// sender6 writes IPv6 datagrams to StdNetBind's IPv6 socket.
type sender6 struct {
	uc   *net.UDPConn
	pc   *ipv6.PacketConn
	gso  atomic.Bool // the socket takes UDP_SEGMENT; cleared when a send says otherwise
	pool sync.Pool   // *batch6

	gsoSends atomic.Uint64 // sendmsg calls with UDP_SEGMENT (tests)
}

type batch6 struct {
	msgs []ipv6.Message
	addr net.UDPAddr
	ip   [16]byte
	buf  []byte // a GSO run, copied into one buffer
}

// newSender6 returns a sender over std's open IPv6 socket, or nil when std
// has none (no IPv6 on the host) or is not the StdNetBind this file knows.
func newSender6(std conn.Bind) *sender6 {
	v := reflect.ValueOf(std)
	if v.Kind() != reflect.Pointer || v.IsNil() || v.Elem().Kind() != reflect.Struct {
		return nil
	}
	f := v.Elem().FieldByName("ipv6")
	if !f.IsValid() || f.Type() != reflect.TypeFor[*net.UDPConn]() || f.IsNil() {
		return nil
	}
	c := (*net.UDPConn)(f.UnsafePointer())
	s := &sender6{uc: c, pc: ipv6.NewPacketConn(c)}
	s.gso.Store(udpgso.Supported(c))
	s.pool.New = func() any { return new(batch6) }
	return s
}

// send writes bufs to dst: runs of equal-sized packets with GSO when the
// socket has it, the others one datagram each.
func (s *sender6) send(bufs [][]byte, dst netip.AddrPort) error {
	b := s.pool.Get().(*batch6)
	defer s.pool.Put(b)
	for len(bufs) > 0 {
		n := 1
		if s.gso.Load() {
			n = gsoRun(bufs)
		}
		if n == 1 {
			// Up to the next run worth coalescing, one datagram each.
			for n < len(bufs) && (!s.gso.Load() || gsoRun(bufs[n:]) == 1) {
				n++
			}
			if err := s.sendEach(b, bufs[:n], dst); err != nil {
				return err
			}
			bufs = bufs[n:]
			continue
		}
		b.buf = b.buf[:0]
		for _, p := range bufs[:n] {
			b.buf = append(b.buf, p...)
		}
		err := udpgso.Send(s.uc, b.buf, len(bufs[0]), dst)
		switch {
		case err == nil:
			s.gsoSends.Add(1)
		case errors.Is(err, udpgso.ErrUnsupported):
			s.gso.Store(false)
			err = s.sendEach(b, bufs[:n], dst)
		}
		if err != nil {
			return err
		}
		bufs = bufs[n:]
	}
	return nil
}

// gsoRun is how many packets from the start of bufs one GSO send can
// carry: packets of the first one's size, then at most one shorter.
func gsoRun(bufs [][]byte) int {
	seg := len(bufs[0])
	if seg == 0 {
		return 1
	}
	n, total := 1, seg
	for n < len(bufs) && n < gsoMaxSegments && total+len(bufs[n]) <= gsoMaxBytes {
		l := len(bufs[n])
		if l > seg || l == 0 {
			break
		}
		n++
		total += l
		if l < seg {
			break
		}
	}
	return n
}

// sendEach writes bufs to dst, one datagram each, many per sendmmsg.
func (s *sender6) sendEach(b *batch6, bufs [][]byte, dst netip.AddrPort) error {
	b.ip = dst.Addr().As16()
	b.addr = net.UDPAddr{IP: b.ip[:], Port: int(dst.Port())}
	if cap(b.msgs) < len(bufs) {
		b.msgs = make([]ipv6.Message, len(bufs))
		for i := range b.msgs {
			b.msgs[i].Buffers = make([][]byte, 1)
		}
	}
	msgs := b.msgs[:len(bufs)]
	for i, p := range bufs {
		msgs[i].Buffers[0] = p
		msgs[i].Addr = &b.addr
		msgs[i].OOB = nil
	}
	defer func() {
		for i := range msgs {
			msgs[i].Buffers[0] = nil // do not keep WireGuard's buffers alive
		}
	}()
	for start := 0; start < len(msgs); {
		n, err := s.pc.WriteBatch(msgs[start:], 0)
		if err != nil {
			return err
		}
		start += n
	}
	return nil
}
