package relay

import (
	"net"
	"net/netip"

	"golang.org/x/net/ipv4"
)

// Receive batching of a UDP worker socket: messages per recvmmsg, and the
// largest datagram taken (larger ones are dropped; WireGuard packets are
// at most ~1500 bytes, and pion's relay sockets read at most 1600).
const (
	readBatchSize = 32
	readBatchMTU  = 4096
)

// readBatch reads a UDP socket with recvmmsg (one system call for as many
// datagrams as are queued, up to readBatchSize) and hands them out one at
// a time. Only the socket's read loop uses it.
type readBatch struct {
	pc   *ipv4.PacketConn // works on IPv6 sockets too: reading needs no family
	msgs []ipv4.Message
	n, i int
	// before runs before each recvmmsg (which may wait).
	before func()
}

func newReadBatch(uc *net.UDPConn) *readBatch {
	b := &readBatch{pc: ipv4.NewPacketConn(uc), msgs: make([]ipv4.Message, readBatchSize)}
	for i := range b.msgs {
		b.msgs[i].Buffers = [][]byte{make([]byte, readBatchMTU)}
	}
	return b
}

// read copies the next datagram into p.
func (b *readBatch) read(p []byte) (int, netip.AddrPort, error) {
	for {
		for b.i < b.n {
			m := &b.msgs[b.i]
			b.i++
			ua, ok := m.Addr.(*net.UDPAddr)
			if !ok || m.Flags&msgTrunc != 0 || m.N > len(p) {
				continue // truncated or unaddressed: drop
			}
			ap := ua.AddrPort()
			return copy(p, m.Buffers[0][:m.N]), netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), nil
		}
		if b.before != nil {
			b.before()
		}
		n, err := b.pc.ReadBatch(b.msgs, 0)
		if err != nil {
			return 0, netip.AddrPort{}, err
		}
		b.n, b.i = n, 0
	}
}
