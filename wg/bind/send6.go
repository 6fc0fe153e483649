package bind

import (
	"net"
	"net/netip"
	"reflect"
	"sync"

	"golang.org/x/net/ipv6"
	"golang.zx2c4.com/wireguard/conn"
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
// reflect; receiving stays StdNetBind's). What is lost is UDP GSO for IPv6
// sends: each packet is its own datagram, still many per sendmmsg. The
// source-address cmsg StdNetBind would add is omitted too; it never has one
// here (its receive path drops IPV6_PKTINFO, so endpoints carry no source).

// sender6 writes IPv6 datagrams to StdNetBind's IPv6 socket.
type sender6 struct {
	pc   *ipv6.PacketConn
	pool sync.Pool // *batch6
}

type batch6 struct {
	msgs []ipv6.Message
	addr net.UDPAddr
	ip   [16]byte
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
	s := &sender6{pc: ipv6.NewPacketConn(c)}
	s.pool.New = func() any { return new(batch6) }
	return s
}

// send writes bufs to dst, one datagram each.
func (s *sender6) send(bufs [][]byte, dst netip.AddrPort) error {
	b := s.pool.Get().(*batch6)
	defer s.pool.Put(b)
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
