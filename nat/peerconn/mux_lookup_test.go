package peerconn

import (
	"net"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
)

// pion v3.0.16 dereferences a deleted cache entry when a server-reflexive
// lookup expires while another caller still waits for it (an agent crashed
// so under memory pressure). Mux lets the callers for one server share one
// lookup, so nobody waits inside pion while another caller expires the
// entry. The sign of that: concurrent callers send one STUN request, not
// one each (pion sends one per call).
func TestXORMappedLookupIsShared(t *testing.T) {
	conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// A STUN "server" that never answers keeps the lookup pending.
	silent, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	m := newMux(conn, nil, zaptest.NewLogger(t), 20*time.Millisecond)
	defer m.Close()

	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := 0; i < 32; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			if _, err := m.GetXORMappedAddr(silent.LocalAddr(), 300*time.Millisecond); err == nil {
				t.Error("a server that never answers gave an address")
			}
		}()
	}
	close(start)
	wg.Wait()

	requests := 0
	buf := make([]byte, 1500)
	for requests < 64 {
		silent.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		if _, _, err := silent.ReadFrom(buf); err != nil {
			break
		}
		requests++
	}
	// The goroutines may not all overlap on a busy machine, but 32 callers
	// at once must not each send their own request.
	if requests == 0 || requests > 4 {
		t.Fatalf("%d STUN requests for 32 concurrent lookups; want them shared (1)", requests)
	}
}
