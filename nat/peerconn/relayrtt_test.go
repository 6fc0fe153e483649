package peerconn

import (
	"testing"
	"time"

	"github.com/pion/stun/v2"

	"meshd/internal/testutil"
)

// TestRelaySessionRTT: a connected relay session over TURN/UDP reports the
// round trip of its checks through the relay (pion reports none).
func TestRelaySessionRTT(t *testing.T) {
	servers := turnServer(t)
	var udp []*stun.URI
	for _, u := range servers.TURN {
		if u.Proto == stun.ProtoTypeUDP {
			udp = append(udp, u)
		}
	}
	servers.TURN = udp // what the round trip is measured on
	a, b := pair(t, Relay, servers, false)
	s := a.newSession(12)
	b.receive(offer(s))
	if err := s.Gather(); err != nil {
		t.Fatal(err)
	}
	if p := waitPair(t, a); p.Local.Type != "relay" {
		t.Fatalf("pair %v is not relayed", p)
	}
	// Consent checks run every few seconds.
	testutil.WaitEvery(t, 10*time.Second, 20*time.Millisecond, "a round trip measured on the relayed pair", func() bool { return s.RTT() != 0 })
	if rtt := s.RTT(); rtt <= 0 || rtt > 5*time.Second {
		t.Fatalf("relayed RTT %v", rtt)
	}
	t.Logf("relayed RTT %v", s.RTT())
}

func TestRelayedSTUN(t *testing.T) {
	req := []byte{0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}
	cd := append([]byte{0x40, 0x01, 0x00, byte(len(req))}, req...)
	id, typ, ok := relayedSTUN(cd)
	if !ok || typ != bindingRequest || id[0] != 1 || id[11] != 12 {
		t.Fatalf("ChannelData with a binding request: %v %x %v", id, typ, ok)
	}
	if _, _, ok := relayedSTUN(cd[:10]); ok {
		t.Fatal("a cut ChannelData message parsed")
	}
	if _, _, ok := relayedSTUN(append([]byte{0x40, 0x01, 0x00, 0x04}, 1, 0, 0, 0)); ok {
		t.Fatal("a WireGuard message in ChannelData taken for STUN")
	}
}
