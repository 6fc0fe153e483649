package peerconn

import (
	"encoding/binary"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/ice/v3"
	"github.com/pion/stun/v2"
	"github.com/pion/transport/v3"
	"go.uber.org/zap"
	"golang.org/x/sync/singleflight"
)

// Mux is the UDP mux every direct session of an agent shares: it runs pion's
// ICE (host and server-reflexive candidates) over the WireGuard socket's STUN
// side (wg.Device.STUNConn), so the NAT mapping ICE finds is the one
// WireGuard sends from. It also measures the round-trip time of ICE checks
// per remote address, which pion v3 does not report.
type Mux struct {
	*ice.UniversalUDPMuxDefault
	rtt    *rttConn
	lookup singleflight.Group // server address → GetXORMappedAddr in flight
}

// NewMux starts a mux reading conn. Close it before conn goes away. tnet may
// be nil (the host's network); it only lists local addresses when conn is
// bound to an unspecified address.
func NewMux(conn net.PacketConn, tnet transport.Net, log *zap.Logger) *Mux {
	// Server-reflexive addresses are shared by every session; refresh them
	// often enough to notice a new NAT mapping.
	return newMux(conn, tnet, log, 20*time.Second)
}

func newMux(conn net.PacketConn, tnet transport.Net, log *zap.Logger, srflxTTL time.Duration) *Mux {
	rc := &rttConn{PacketConn: conn, sent: make(map[[12]byte]sentCheck), rtt: make(map[string]time.Duration), ready: make(chan struct{})}
	// pion v3.0.16 starts the mux's reader before it has finished building
	// the mux (UniversalUDPMuxDefault.UDPMuxDefault is assigned after the
	// reader runs): a packet arriving in that window would crash it. The
	// reader waits for ready.
	defer close(rc.ready)
	m := ice.NewUniversalUDPMuxDefault(ice.UniversalUDPMuxParams{
		Logger:                LoggerFactory(log).NewLogger("mux"),
		UDPConn:               rc,
		Net:                   tnet,
		XORMappedAddrCacheTTL: srflxTTL,
	})
	return &Mux{UniversalUDPMuxDefault: m, rtt: rc}
}

// GetXORMappedAddr returns this socket's server-reflexive address as seen
// by serverAddr. pion v3.0.16 crashes (nil dereference) when a cached
// lookup expires while another caller still waits for it; here every
// caller for one server shares a single lookup, so no caller ever waits
// while another one expires the entry.
func (m *Mux) GetXORMappedAddr(serverAddr net.Addr, deadline time.Duration) (*stun.XORMappedAddress, error) {
	v, err, _ := m.lookup.Do(serverAddr.String(), func() (any, error) {
		return m.UniversalUDPMuxDefault.GetXORMappedAddr(serverAddr, deadline)
	})
	if err != nil {
		return nil, err
	}
	return v.(*stun.XORMappedAddress), nil
}

var _ ice.UniversalUDPMux = (*Mux)(nil)

// SetGuard makes the mux drop what arrives from, and refuse what pion
// writes to, the addresses g holds (see Guard): a binding request that
// came through the tunnel never becomes a peer-reflexive candidate.
func (m *Mux) SetGuard(g *Guard) { m.rtt.guard.Store(g) }

// Guarded counts the packets dropped because they came from a guarded
// address.
func (m *Mux) Guarded() uint64 { return m.rtt.guarded.Load() }

// RTT returns the last measured round-trip time of an ICE check to addr
// (ip:port), zero when unknown.
func (m *Mux) RTT(addr string) time.Duration { return m.rtt.get(addr) }

// Answered reports whether a binding request to addr (ip:port) was ever
// answered over the WireGuard socket: for a STUN server, that UDP reaches it.
func (m *Mux) Answered(addr string) bool { return m.rtt.get(addr) > 0 }

// RelayURLs picks the TURN servers a relay session should allocate on. Each
// allocation costs a slot of the peer's quota on the relay, so when UDP to
// a relay's STUN port is known to work, only its turn:...?transport=udp
// URL is used; otherwise (UDP blocked, or not known yet) every transport.
func (m *Mux) RelayURLs(s Servers) Servers {
	var udp []*stun.URI
	for _, u := range s.TURN {
		if u.Scheme != stun.SchemeTypeTURN || u.Proto != stun.ProtoTypeUDP {
			continue
		}
		ip, err := netip.ParseAddr(u.Host)
		if err != nil {
			continue // a name: not resolved here; keep every transport
		}
		if m.Answered(netip.AddrPortFrom(ip.Unmap(), uint16(u.Port)).String()) {
			udp = append(udp, u)
		}
	}
	if len(udp) == 0 {
		return s
	}
	return Servers{STUN: s.STUN, TURN: udp}
}

// rttConn notes when binding requests leave and matches the success
// responses that come back.
type rttConn struct {
	net.PacketConn
	ready   chan struct{}
	guard   atomic.Pointer[Guard]
	guarded atomic.Uint64

	mu   sync.Mutex
	sent map[[12]byte]sentCheck
	rtt  map[string]time.Duration
}

type sentCheck struct {
	to string
	at time.Time
}

const (
	stunHeaderLen    = 20
	stunMagicCookie  = 0x2112A442
	bindingRequest   = 0x0001
	bindingSuccess   = 0x0101
	maxPendingChecks = 4096
	maxRTTEntries    = 4096
)

// stunType returns the STUN message type of b, or 0 when b is not STUN.
func stunType(b []byte) (uint16, bool) {
	if len(b) < stunHeaderLen || b[0]&0xc0 != 0 || binary.BigEndian.Uint32(b[4:8]) != stunMagicCookie {
		return 0, false
	}
	return binary.BigEndian.Uint16(b[0:2]), true
}

func (c *rttConn) WriteTo(p []byte, addr net.Addr) (int, error) {
	if c.guard.Load().containsNet(addr) {
		return 0, ErrGuarded
	}
	if t, ok := stunType(p); ok && t == bindingRequest {
		var id [12]byte
		copy(id[:], p[8:20])
		c.mu.Lock()
		if len(c.sent) >= maxPendingChecks {
			clear(c.sent) // answers to these are long overdue
		}
		c.sent[id] = sentCheck{to: addr.String(), at: time.Now()}
		c.mu.Unlock()
	}
	return c.PacketConn.WriteTo(p, addr)
}

func (c *rttConn) ReadFrom(p []byte) (int, net.Addr, error) {
	<-c.ready
	n, addr, err := c.PacketConn.ReadFrom(p)
	for err == nil && c.guard.Load().containsNet(addr) {
		c.guarded.Add(1)
		n, addr, err = c.PacketConn.ReadFrom(p)
	}
	if err == nil {
		if t, ok := stunType(p[:n]); ok && t == bindingSuccess {
			var id [12]byte
			copy(id[:], p[8:20])
			c.mu.Lock()
			if s, ok := c.sent[id]; ok {
				delete(c.sent, id)
				if len(c.rtt) >= maxRTTEntries {
					clear(c.rtt)
				}
				c.rtt[s.to] = time.Since(s.at)
			}
			c.mu.Unlock()
		}
	}
	return n, addr, err
}

func (c *rttConn) get(addr string) time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.rtt[addr]
}
