package relay

import (
	"net"
	"net/netip"
	"sync/atomic"
	"testing"

	"go.uber.org/zap/zaptest"
)

// A relayed packet to another allocation of this relay whose queue is full
// is dropped, like a datagram into a full socket buffer, and counted in
// Stats and /metrics; the queue holds maxInternalQueue packets.
func TestInternalDeliveryDropsWhenFullAndCounts(t *testing.T) {
	uc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer uc.Close()
	pub := netip.MustParseAddr("198.51.100.1")
	s := &Server{m: newMetrics(), log: zaptest.NewLogger(t), opts: Options{PublicIP: pub, PortMin: 50000, PortMax: 50001}}
	s.relays = make([]atomic.Pointer[relayConn], 2)
	sender := &relayConn{s: s, uc: uc, public: &net.UDPAddr{IP: pub.AsSlice(), Port: 50000}, port: 50000}
	receiver := &relayConn{s: s, uc: uc, public: &net.UDPAddr{IP: pub.AsSlice(), Port: 50001}, port: 50001}
	s.relays[1].Store(receiver)

	to := &net.UDPAddr{IP: pub.AsSlice(), Port: 50001}
	p := make([]byte, 1200)
	for i := 0; i < maxInternalQueue+10; i++ {
		if n, err := sender.WriteTo(p, to); err != nil || n != len(p) {
			t.Fatalf("write %d: %d, %v", i, n, err)
		}
	}
	if got := len(receiver.in); got != maxInternalQueue {
		t.Fatalf("queued %d packets, want %d", got, maxInternalQueue)
	}
	st := s.Stats()
	if st.QueueDrops != 10 {
		t.Fatalf("QueueDrops = %d, want 10", st.QueueDrops)
	}
	if got := sender.pktsToPeer.Load(); got != maxInternalQueue {
		t.Fatalf("packets counted as relayed = %d, want %d (drops are not relayed)", got, maxInternalQueue)
	}
}
