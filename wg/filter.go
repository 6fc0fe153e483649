package wg

import (
	"sync/atomic"
	"time"

	"golang.zx2c4.com/wireguard/tun"
)

// PacketFilter decides which packets may cross the tunnel (the firewall
// rules of the network map; internal/filter's Filter is one).
type PacketFilter interface {
	// Allow reports whether pkt may pass. pkt is one IPv4 or IPv6 packet,
	// starting at its IP header. inbound is true for a packet that came out
	// of the tunnel (decrypted, from a peer) on its way to this machine,
	// false for one on its way into the tunnel. Allow runs on the data path
	// for every packet, from several goroutines at once: it must be cheap,
	// safe for concurrent use, and must not keep pkt.
	Allow(pkt []byte, inbound bool) bool
}

// timedFilter is a PacketFilter that takes the time from its caller, so
// that the clock is read once per batch of packets rather than per packet
// (on virtual machines without a fast clock source that is half the cost
// of judging a TCP packet). internal/filter's Filter is one.
type timedFilter interface {
	AllowAt(pkt []byte, inbound bool, now time.Time) bool
}

// newFilteredTUN wraps dev.
func newFilteredTUN(dev tun.Device, f PacketFilter) *filteredTUN {
	t := &filteredTUN{Device: dev, f: f}
	t.timed, _ = f.(timedFilter)
	return t
}

// filteredTUN applies a PacketFilter to everything wireguard-go moves
// between the TUN and its peers (userspace and netstack modes):
//
//   - Read: packets the system sends into the tunnel. wireguard-go's Linux
//     TUN reads a TSO/USO super-packet whole but hands it back already split
//     into segments, one IP packet per buffer at offset (gsoSplit), so every
//     buffer here has its own IP and transport header. A denied packet gets
//     size 0, which wireguard-go skips. Allowed ones teach the filter the
//     flows this side opens, so their replies pass.
//   - Write: packets wireguard-go decrypted, one IP packet per buffer at
//     offset, before the Linux TUN coalesces them (GRO) into super-packets.
//     Denied ones are taken out of the batch.
type filteredTUN struct {
	tun.Device
	f     PacketFilter
	timed timedFilter // f, when it can take the time

	droppedIn  atomic.Uint64
	droppedOut atomic.Uint64
}

var _ tun.Device = (*filteredTUN)(nil)

func (t *filteredTUN) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	n, err := t.Device.Read(bufs, sizes, offset)
	now := t.batchTime()
	for i := 0; i < n; i++ {
		if sizes[i] > 0 && !t.allow(bufs[i][offset:offset+sizes[i]], false, now) {
			sizes[i] = 0
			t.droppedOut.Add(1)
		}
	}
	return n, err
}

// batchTime is the time for judging one batch (zero: the filter reads its
// own clock).
func (t *filteredTUN) batchTime() time.Time {
	if t.timed == nil {
		return time.Time{}
	}
	return time.Now()
}

func (t *filteredTUN) allow(p []byte, inbound bool, now time.Time) bool {
	if t.timed != nil {
		return t.timed.AllowAt(p, inbound, now)
	}
	return t.f.Allow(p, inbound)
}

// Write drops the denied packets by compacting bufs in place: wireguard-go
// builds bufs afresh for every call and returns the buffers to its pools
// through its own list, never through bufs, so reordering the slice is safe
// (the Linux TUN's GRO rewrites bufs' contents too).
func (t *filteredTUN) Write(bufs [][]byte, offset int) (int, error) {
	kept := 0
	now := t.batchTime()
	for i, b := range bufs {
		if !t.allow(b[offset:], true, now) {
			t.droppedIn.Add(1)
			continue
		}
		if kept != i {
			bufs[kept] = b
		}
		kept++
	}
	if kept == 0 {
		return 0, nil
	}
	return t.Device.Write(bufs[:kept], offset)
}
