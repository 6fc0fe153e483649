package relay_test

import (
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/pion/stun/v2"

	"meshd/internal/testutil"
	"meshd/nat/relay"
	"meshd/nat/relay/relaytest"
)

// natRelay runs a relay announced on a public address that is not local,
// as on a VPS behind 1:1 NAT (relay sockets on loopback).
func natRelay(t *testing.T, allow ...string) (*relay.Server, netip.Addr) {
	public := netip.MustParseAddr("192.0.2.7") // TEST-NET-1, never local
	s := startRelay(t, func(o *relay.Options) {
		o.PublicIP = public
		o.RelayBindIP = netip.MustParseAddr("127.0.0.1")
		for _, a := range allow {
			o.AllowPeers = append(o.AllowPeers, netip.MustParsePrefix(a))
		}
	})
	return s, public
}

func udpAddr(s string) *net.UDPAddr {
	return net.UDPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr(s), 9))
}

// TestPeerPolicyRefusesPrivateAndOwn asks a pion TURN client (as the
// agent's) for permissions into the relay's host and private networks:
// each gets 403 Forbidden, while public peers and the other relayed
// addresses on the relay stay reachable.
func TestPeerPolicyRefusesPrivateAndOwn(t *testing.T) {
	s, public := natRelay(t)
	a := mustAllocate(t, s.UDPAddr().String(), relaytest.UDP, cred("a"), nil)
	b := mustAllocate(t, s.UDPAddr().String(), relaytest.UDP, cred("b"), nil)

	refused := []string{
		"127.0.0.1", "127.1.2.3", // loopback
		"0.0.0.0",
		"10.0.0.1", "172.16.5.4", "172.31.255.254", "192.168.1.1", // private
		"100.64.0.1", "100.127.255.254", // CGNAT
		"169.254.169.254", "169.254.1.1", // link-local, metadata
		"224.0.0.1", "239.255.255.250", "255.255.255.255", "240.0.0.1",
	}
	for _, ip := range refused {
		err := a.Client.CreatePermission(udpAddr(ip))
		if err == nil || !strings.Contains(err.Error(), "403") {
			t.Errorf("permission to %s: err = %v, want 403 Forbidden", ip, err)
		}
	}
	// Public peers, the documentation ranges labs use as their internet,
	// and the relay's own public address (where relayed addresses live).
	for _, ip := range []string{"198.51.100.7", "203.0.113.9", "192.0.2.44", "8.8.8.8", public.String()} {
		if err := a.Client.CreatePermission(udpAddr(ip)); err != nil {
			t.Errorf("permission to %s: %v", ip, err)
		}
	}
	if got := s.Stats().ErrorResponses[403]; got != uint64(len(refused)) {
		t.Errorf("%d answers 403, want %d", got, len(refused))
	}

	// IPv6 on the wire (pion's client would send a mapped address as
	// IPv4): mapped, NAT64, link-local, ULA, loopback.
	raw, err := relaytest.DialRaw(s.UDPAddr(), cred("raw"))
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	for _, ip := range []string{"::ffff:10.0.0.1", "::ffff:127.0.0.1", "64:ff9b::a00:1", "fe80::1", "fd00::1", "::1", "2001:db8::1"} {
		err := raw.CreatePermission(netip.AddrPortFrom(netip.MustParseAddr(ip), 9))
		if err == nil || !strings.Contains(err.Error(), "403") {
			t.Errorf("permission to [%s]: err = %v, want 403 Forbidden", ip, err)
		}
	}

	// A channel to the relay's public address must lead to a relayed
	// address: the TURN port and other ports are refused, b's works.
	turnPort := netip.AddrPortFrom(public, s.UDPAddr().Port())
	for i, dst := range []netip.AddrPort{turnPort, netip.AddrPortFrom(public, 22), netip.AddrPortFrom(public, 33073)} {
		err := raw.ChannelBind(relaytest.FirstChannel+uint16(i), dst)
		if err == nil || !strings.Contains(err.Error(), "403") {
			t.Errorf("channel to %s: err = %v, want 403 Forbidden", dst, err)
		}
	}
	if err := raw.ChannelBind(relaytest.FirstChannel+10, b.RelayAddr().AddrPort()); err != nil {
		t.Errorf("channel to b's relayed address %s: %v", b.RelayAddr(), err)
	}
	// Two relayed peers of this relay still meet.
	if got := relaytest.Exchange(t, a, b, 20, 1280); got != 20*1280 {
		t.Fatalf("a to b: got %d bytes", got)
	}
}

// TestPeerPolicyOwnTURNPort sends a STUN binding request through an
// allocation to the relay's own TURN port on its (local) public address,
// which the permission for relayed addresses covers: the relay drops it
// instead of answering itself.
func TestPeerPolicyOwnTURNPort(t *testing.T) {
	s := startRelay(t, nil) // public 127.0.0.1, local
	a := mustAllocate(t, s.UDPAddr().String(), relaytest.UDP, cred("a"), nil)
	b := mustAllocate(t, s.UDPAddr().String(), relaytest.UDP, cred("b"), nil)
	req, err := stun.Build(stun.TransactionID, stun.BindingRequest)
	if err != nil {
		t.Fatal(err)
	}
	turnAddr := net.UDPAddrFromAddrPort(s.UDPAddr())
	buf := make([]byte, 1500)
	for i := 0; i < 3; i++ {
		if _, err := a.Relay.WriteTo(req.Raw, turnAddr); err != nil {
			t.Fatalf("send to the TURN port: %v", err)
		}
	}
	testutil.WaitFor(t, 10*time.Second, "the relay to drop the packets to its TURN port", func() bool { return s.Stats().PeersDenied >= 3 })
	// Nothing comes back: a binding response would arrive within
	// milliseconds on loopback.
	_ = a.Relay.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	if n, from, err := a.Relay.ReadFrom(buf); err == nil {
		t.Fatalf("got %d bytes from %s through the relay's own TURN port", n, from)
	}
	_ = a.Relay.SetReadDeadline(time.Time{})
	if got := relaytest.Exchange(t, a, b, 20, 1280); got != 20*1280 {
		t.Fatalf("a to b: got %d bytes", got)
	}
}

// TestPeerPolicyAllowList opens a private range for a private deployment;
// the rest stays refused, and so do the relay host's own addresses.
func TestPeerPolicyAllowList(t *testing.T) {
	s, _ := natRelay(t, "10.0.0.0/8", "127.0.0.0/8")
	a := mustAllocate(t, s.UDPAddr().String(), relaytest.UDP, cred("a"), nil)
	for ip, want := range map[string]bool{
		"10.0.0.1":    true,
		"10.200.3.4":  true,
		"127.0.0.2":   true,  // allowed loopback, not an interface address
		"127.0.0.1":   false, // the host's own address
		"192.168.1.1": false,
		"100.64.0.1":  false,
	} {
		err := a.Client.CreatePermission(udpAddr(ip))
		if want && err != nil {
			t.Errorf("permission to %s: %v", ip, err)
		}
		if !want && (err == nil || !strings.Contains(err.Error(), "403")) {
			t.Errorf("permission to %s: err = %v, want 403 Forbidden", ip, err)
		}
	}
}
