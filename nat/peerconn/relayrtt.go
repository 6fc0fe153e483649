package peerconn

import (
	"encoding/binary"
	"net/netip"
	"sync"
	"time"

	"github.com/pion/stun/v2"
)

// relayRTT measures the round trip of a relayed path: ICE's checks on a
// relay pair (binding requests and their answers, from the allocation to
// the remote's candidate and back) pass through the TURN client's socket
// wrapped in ChannelData or in Send and Data indications. pion does not
// report their round-trip time; a turnSocket notes when each request
// leaves and when its answer comes back, as rttConn does for direct
// sessions.
type relayRTT struct {
	mu   sync.Mutex
	sent map[[stun.TransactionIDSize]byte]time.Time
	last time.Duration
}

// maxPendingRelayChecks bounds the requests waiting for an answer.
const maxPendingRelayChecks = 256

// out notes a binding request inside what pion sends to the server.
func (r *relayRTT) out(p []byte) {
	id, t, ok := relayedSTUN(p)
	if !ok || t != bindingRequest {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.sent == nil || len(r.sent) >= maxPendingRelayChecks {
		r.sent = make(map[[stun.TransactionIDSize]byte]time.Time)
	}
	r.sent[id] = time.Now()
}

// in matches an answer inside what the server sent.
func (r *relayRTT) in(p []byte) {
	id, t, ok := relayedSTUN(p)
	if !ok || t != bindingSuccess {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if at, ok := r.sent[id]; ok {
		delete(r.sent, id)
		r.last = time.Since(at)
	}
}

// get returns the last round trip measured, zero when none.
func (r *relayRTT) get() time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.last
}

// relayedSTUN finds a STUN message relayed inside p (a ChannelData
// message, or a Send or Data indication) and returns its transaction ID
// and type.
func relayedSTUN(p []byte) (id [stun.TransactionIDSize]byte, typ uint16, ok bool) {
	var inner []byte
	switch {
	case len(p) >= 4 && p[0]&0xc0 == 0x40: // ChannelData: channel 0x4000-0x7fff, length
		l := int(binary.BigEndian.Uint16(p[2:4]))
		if 4+l > len(p) {
			return id, 0, false
		}
		inner = p[4 : 4+l]
	default:
		t, isSTUN := stunType(p)
		if !isSTUN || (t != stunType0(stun.MethodSend, stun.ClassIndication) && t != stunType0(stun.MethodData, stun.ClassIndication)) {
			return id, 0, false
		}
		m := &stun.Message{Raw: p} // Decode reads Raw in place; nothing of m outlives this call
		if m.Decode() != nil {
			return id, 0, false
		}
		d, err := m.Get(stun.AttrData)
		if err != nil {
			return id, 0, false
		}
		inner = d
	}
	typ, ok = stunType(inner)
	if !ok {
		return id, 0, false
	}
	copy(id[:], inner[8:20])
	return id, typ, true
}

// relayRTT returns the round trip measured on the socket whose allocation
// is p's local candidate.
func (s *Session) relayRTT(p Pair) time.Duration {
	if s.rnet == nil {
		return 0
	}
	ap, err := netip.ParseAddrPort(p.Local.Address)
	if err != nil {
		return 0
	}
	if sock := s.rnet.socket(netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())); sock != nil {
		return sock.rtt.get()
	}
	return 0
}
