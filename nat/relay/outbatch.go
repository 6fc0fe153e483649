package relay

import (
	"net/netip"
	"sync"

	"go.uber.org/zap"
)

// GSO limits: segments per send (the kernel's UDP_MAX_SEGMENTS is 64 on
// older kernels) and bytes per send (an IP datagram's, with headers).
const (
	maxGSOSegments = 64
	maxGSOBytes    = 65000
)

// outBatch gathers the ChannelData an allocation sends its client while
// its goroutine works through what is queued, and sends them as one UDP
// GSO write when the goroutine is about to wait: same-size packets (the
// usual WireGuard bulk transfer) cost one trip through the network stack
// per batch instead of one per packet. The allocation's goroutine (pion's
// packetHandler, which alone writes ChannelData to that client) uses it,
// so nothing waits in it while that goroutine sleeps; the mutex only
// covers the moment a replaced allocation of the same client is still
// finishing a packet.
type outBatch struct {
	mu    sync.Mutex
	f     *front
	dst   netip.AddrPort
	buf   []byte // segments back to back
	seg   int    // segment size; the last segment may be shorter
	n     int    // segments in buf
	short bool   // the last segment is shorter: the batch is closed
}

func newOutBatch(f *front, dst netip.AddrPort) *outBatch {
	return &outBatch{f: f, dst: dst, buf: make([]byte, 0, maxGSOBytes)}
}

// add queues p, sending what is queued first if p cannot join it.
func (b *outBatch) add(p []byte) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.n > 0 && (b.short || len(p) > b.seg || b.n == maxGSOSegments || len(b.buf)+len(p) > maxGSOBytes) {
		b.flushLocked()
	}
	if b.n == 0 {
		b.seg = len(p)
	}
	b.buf = append(b.buf, p...)
	b.n++
	b.short = len(p) < b.seg
}

// flush sends what is queued.
func (b *outBatch) flush() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.flushLocked()
}

func (b *outBatch) flushLocked() {
	switch {
	case b.n == 0:
		return
	case b.n == 1 || !b.f.gso.Load():
		b.sendEach()
	default:
		err := sendSegments(b.f.udp, b.buf, b.seg, b.dst)
		switch {
		case err == nil:
			b.f.s.m.gsoSends.Add(1)
			b.f.s.m.gsoPackets.Add(uint64(b.n))
		case gsoFatal(err):
			b.f.gso.Store(false)
			b.f.s.log.Info("UDP GSO refused; sending datagrams one by one", zap.Error(err))
			b.sendEach()
		}
	}
	b.buf, b.n, b.short = b.buf[:0], 0, false
}

func (b *outBatch) sendEach() {
	for off := 0; off < len(b.buf); off += b.seg {
		end := min(off+b.seg, len(b.buf))
		_, _ = b.f.udp.WriteToUDPAddrPort(b.buf[off:end], b.dst)
	}
}
