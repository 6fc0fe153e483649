package relay

import (
	"net"
	"net/netip"
	"testing"
)

// TestPeerPolicyHostAddresses: every address on the host's interfaces is
// refused, allow list or not; the public address is the exception.
func TestPeerPolicyHostAddresses(t *testing.T) {
	p := newPeerPolicy(netip.MustParseAddr("198.51.100.1"), []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24")}, nil)
	p.addrs = func() ([]net.Addr, error) {
		return []net.Addr{
			&net.IPNet{IP: net.ParseIP("203.0.113.5"), Mask: net.CIDRMask(24, 32)},
			&net.IPNet{IP: net.ParseIP("198.51.100.1"), Mask: net.CIDRMask(24, 32)},
			&net.IPNet{IP: net.ParseIP("2001:db8::5"), Mask: net.CIDRMask(64, 128)},
		}, nil
	}
	for ip, want := range map[string]bool{
		"203.0.113.5":        false, // on an interface, though allowed
		"::ffff:203.0.113.5": false,
		"203.0.113.6":        true, // allowed, not on an interface
		"198.51.100.1":       true, // the public address: relayed addresses
		"198.51.100.2":       true,
	} {
		if ok, rule := p.check(netip.MustParseAddr(ip)); ok != want {
			t.Errorf("check(%s) = %v (%s), want %v", ip, ok, rule, want)
		}
	}
}
