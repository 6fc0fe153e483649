package relay

import (
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"

	"go.uber.org/zap"

	"meshd/internal/udpgso"
)

// GSO limits: segments per send (the kernel's UDP_MAX_SEGMENTS is 64 on
// older kernels) and bytes per send (an IP datagram's, with headers).
const (
	maxGSOSegments = 64
	maxGSOBytes    = 65000
)

// outBatch gathers datagrams for one destination while the goroutine
// that writes them works through what is queued, and sends them as one
// UDP GSO write before that goroutine waits: same-size packets (the usual
// WireGuard bulk transfer) cost one trip through the network stack per
// batch instead of one per packet.
//
// Two kinds: an allocation's ChannelData to its client (on the front's
// socket; only the allocation's goroutine, pion's packetHandler, writes
// those, and flushes before it reads), and a relay socket's datagrams to
// peers (only the front's read loop writes those, and flushes before its
// next recvmmsg). The mutex covers the rare other caller (a replaced
// allocation of the same client finishing a packet, a Close). The buffer
// is taken from a pool while something is queued, so idle allocations
// hold none.
type outBatch struct {
	mu    sync.Mutex
	s     *Server
	uc    *net.UDPConn
	gso   *atomic.Bool // cleared when the kernel refuses GSO on this kind of socket
	dst   netip.AddrPort
	buf   *[]byte // segments back to back
	seg   int     // segment size; the last segment may be shorter
	n     int     // segments in buf
	short bool    // the last segment is shorter: the batch is closed
}

var batchPool = sync.Pool{New: func() any {
	b := make([]byte, 0, maxGSOBytes)
	return &b
}}

func newOutBatch(s *Server, uc *net.UDPConn, gso *atomic.Bool, dst netip.AddrPort) *outBatch {
	return &outBatch{s: s, uc: uc, gso: gso, dst: dst}
}

// add queues p for dst, sending what is queued first if p cannot join it.
func (b *outBatch) add(p []byte, dst netip.AddrPort) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.n > 0 && (dst != b.dst || b.short || len(p) > b.seg || b.n == maxGSOSegments || len(*b.buf)+len(p) > maxGSOBytes) {
		b.flushLocked()
	}
	if b.n == 0 {
		b.seg, b.dst = len(p), dst
		b.buf = batchPool.Get().(*[]byte)
	}
	*b.buf = append(*b.buf, p...)
	b.n++
	b.short = len(p) < b.seg
}

// pending reports whether something is queued.
func (b *outBatch) pending() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.n > 0
}

// flush sends what is queued.
func (b *outBatch) flush() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.flushLocked()
}

func (b *outBatch) flushLocked() {
	if b.n == 0 {
		return
	}
	buf := *b.buf
	switch {
	case b.n == 1 || !b.gso.Load():
		b.sendEach(buf)
	default:
		err := udpgso.Send(b.uc, buf, b.seg, b.dst)
		switch {
		case err == nil:
			b.s.m.gsoSends.Add(1)
			b.s.m.gsoPackets.Add(uint64(b.n))
		case errors.Is(err, udpgso.ErrUnsupported):
			b.gso.Store(false)
			b.s.log.Info("UDP GSO refused; sending datagrams one by one", zap.Error(err))
			b.sendEach(buf)
		}
	}
	*b.buf = buf[:0]
	batchPool.Put(b.buf)
	b.buf, b.n, b.short = nil, 0, false
}

func (b *outBatch) sendEach(buf []byte) {
	for off := 0; off < len(buf); off += b.seg {
		end := min(off+b.seg, len(buf))
		_, _ = b.uc.WriteToUDPAddrPort(buf[off:end], b.dst)
	}
}
