package wg

import (
	"sync/atomic"

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
	f PacketFilter

	droppedIn  atomic.Uint64
	droppedOut atomic.Uint64
}

var _ tun.Device = (*filteredTUN)(nil)

func (t *filteredTUN) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	n, err := t.Device.Read(bufs, sizes, offset)
	for i := 0; i < n; i++ {
		if sizes[i] > 0 && !t.f.Allow(bufs[i][offset:offset+sizes[i]], false) {
			sizes[i] = 0
			t.droppedOut.Add(1)
		}
	}
	return n, err
}

// Write drops the denied packets by compacting bufs in place: wireguard-go
// builds bufs afresh for every call and returns the buffers to its pools
// through its own list, never through bufs, so reordering the slice is safe
// (the Linux TUN's GRO rewrites bufs' contents too).
func (t *filteredTUN) Write(bufs [][]byte, offset int) (int, error) {
	kept := 0
	for i, b := range bufs {
		if !t.f.Allow(b[offset:], true) {
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
