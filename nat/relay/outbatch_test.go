package relay

import (
	"bytes"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"meshd/internal/udpgso"
)

// TestOutBatch sends mixed sizes through one batch and checks that every
// datagram arrives whole and in order, and that runs of equal sizes went
// out as GSO writes.
func TestOutBatch(t *testing.T) {
	send, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer send.Close()
	recv, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer recv.Close()
	if !udpgso.Supported(send) {
		t.Skip("no UDP GSO here")
	}
	s := &Server{m: newMetrics(), log: zaptest.NewLogger(t)}
	var gso atomic.Bool
	gso.Store(true)
	dst := recv.LocalAddr().(*net.UDPAddr).AddrPort()
	b := newOutBatch(s, send, &gso, dst)

	sizes := []int{1284, 1284, 1284, 600, 1284, 1284, 1400, 100, 100}
	for i := 0; i < 70; i++ { // more than maxGSOSegments of one size
		sizes = append(sizes, 1000)
	}
	var want [][]byte
	for i, n := range sizes {
		p := bytes.Repeat([]byte{byte(i)}, n)
		want = append(want, p)
		b.add(p, dst)
	}
	b.flush()

	buf := make([]byte, 2048)
	for i, w := range want {
		_ = recv.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, err := recv.Read(buf)
		if err != nil {
			t.Fatalf("datagram %d: %v", i, err)
		}
		if !bytes.Equal(buf[:n], w) {
			t.Fatalf("datagram %d: %d bytes of %d, want %d bytes of %d", i, n, buf[0], len(w), w[0])
		}
	}
	// Runs: 3x1284+600 (a shorter one closes a run) | 2x1284 (a larger one
	// starts another) | 1400+100 | 100 alone (sent as is) | 64x1000 (the
	// segment limit) | 6x1000.
	if got, want := s.m.gsoSends.Load(), uint64(5); got != want {
		t.Fatalf("%d GSO writes, want %d", got, want)
	}
	if got, want := s.m.gsoPackets.Load(), uint64(len(sizes)-1); got != want {
		t.Fatalf("%d packets in GSO writes, want %d", got, want)
	}
}
