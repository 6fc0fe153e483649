package peerconn

import (
	"net/netip"

	"github.com/pion/stun/v2"
)

// ForgetRelayAnswers forgets that the STUN ports of s's TURN-over-UDP
// servers answered, so that the next relay session allocates over every
// transport (TCP and TLS too) until a new answer proves UDP again. RelayURLs
// trusts one answer for as long as the mux lives; a firewall that starts
// dropping UDP under a running agent would otherwise leave it trying
// TURN/UDP alone for ever. The agent calls it when a path over UDP fails;
// a network change makes a new Mux, which knows nothing yet either way.
func (m *Mux) ForgetRelayAnswers(s Servers) {
	for _, u := range s.TURN {
		if u.Scheme != stun.SchemeTypeTURN || u.Proto != stun.ProtoTypeUDP {
			continue
		}
		ip, err := netip.ParseAddr(u.Host)
		if err != nil {
			continue
		}
		m.rtt.forget(netip.AddrPortFrom(ip.Unmap(), uint16(u.Port)).String())
	}
}

func (c *rttConn) forget(addr string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.rtt, addr)
}
