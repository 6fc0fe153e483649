package proxy

import (
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"
)

// udpEcho echoes datagrams on loopback until the test ends.
func udpEcho(tb testing.TB) string {
	tb.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	done := make(chan struct{})
	tb.Cleanup(func() { pc.Close(); <-done })
	go func() {
		defer close(done)
		b := make([]byte, 2048)
		for {
			n, from, err := pc.ReadFrom(b)
			if err != nil {
				return
			}
			pc.WriteTo(append([]byte("echo "), b[:n]...), from)
		}
	}()
	return pc.LocalAddr().String()
}

// TestSOCKS5UDPAssociate: datagrams to a peer by name go through and the
// answers come back with the peer's address in the header; datagrams to
// an address outside the mesh are dropped; the association ends with its
// TCP connection.
func TestSOCKS5UDPAssociate(t *testing.T) {
	m := world(t)
	m.udpAt = map[netip.Addr]string{netip.MustParseAddr("100.64.0.2"): udpEcho(t)}
	addr := socksServer(t, m, 0)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	c.Write([]byte{5, 1, 0, 5, cmdUDPAssociate, 0, 1, 0, 0, 0, 0, 0, 0})
	rep := make([]byte, 12)
	if _, err := io.ReadFull(c, rep); err != nil {
		t.Fatal(err)
	}
	// Greeting answer (5 0), then VER REP RSV ATYP BND.ADDR BND.PORT.
	if rep[2] != 5 || rep[3] != repSucceeded || rep[5] != atypIPv4 {
		t.Fatalf("reply % x", rep)
	}
	relay := netip.AddrPortFrom(netip.AddrFrom4([4]byte(rep[6:10])), binary.BigEndian.Uint16(rep[10:12]))
	uc, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(relay))
	if err != nil {
		t.Fatal(err)
	}
	defer uc.Close()

	dgram := func(host string, port uint16, data string) []byte {
		b := append([]byte{0, 0, 0, atypDomain, byte(len(host))}, host...)
		return append(binary.BigEndian.AppendUint16(b, port), data...)
	}
	uc.Write(dgram("8.8.8.8", 53, "outside")) // dropped: not in the mesh
	uc.Write(dgram("web", 7, "ping"))
	uc.SetReadDeadline(time.Now().Add(5 * time.Second))
	b := make([]byte, 2048)
	n, err := uc.Read(b)
	if err != nil {
		t.Fatal(err)
	}
	want := append(appendAddr([]byte{0, 0, 0}, netip.MustParseAddrPort("127.0.0.1:0")), "echo ping"...)
	// The header names the destination as dialed (here the loopback
	// stand-in for web); the data is the answer.
	if !bytes.HasSuffix(b[:n], []byte("echo ping")) || b[3] != atypIPv4 || len(b[:n]) != len(want) {
		t.Errorf("answer % x, want a header and \"echo ping\"", b[:n])
	}
	// Nothing came back for the datagram to 8.8.8.8.
	uc.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if n, err := uc.Read(b); err == nil {
		t.Errorf("an answer from outside the mesh: %q", b[:n])
	}
	// A fragment is dropped.
	uc.Write(append([]byte{0, 0, 1}, dgram("web", 7, "frag")[3:]...))
	uc.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if n, err := uc.Read(b); err == nil {
		t.Errorf("a fragment was relayed: %q", b[:n])
	}
	// Closing the TCP connection ends the association.
	c.Close()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		uc.Write(dgram("web", 7, "late"))
		uc.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		if _, err := uc.Read(b); err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				return // no answer: the association is gone
			}
			return // ICMP port unreachable: the socket is closed
		}
	}
	t.Error("the association still relays after its TCP connection closed")
}

func TestParseUDPHeader(t *testing.T) {
	for _, tc := range []struct {
		in   []byte
		host string
		ok   bool
	}{
		{[]byte{0, 0, 0, 1, 100, 64, 0, 2, 0, 53, 'x'}, "100.64.0.2", true},
		{[]byte{0, 0, 0, 3, 3, 'w', 'e', 'b', 0, 53}, "web", true},
		{[]byte{0, 0, 1, 1, 100, 64, 0, 2, 0, 53}, "", false}, // fragment
		{[]byte{0, 0, 0, 3, 9, 'w'}, "", false},               // short name
		{[]byte{0, 0, 0, 3, 0, 0, 53}, "", false},             // empty name
		{[]byte{0, 0, 0, 4, 1, 2}, "", false},                 // short v6
		{[]byte{0, 0, 0, 7, 1, 2, 3, 4, 0, 1}, "", false},     // atyp
		{[]byte{0, 0}, "", false},
	} {
		host, _, _, ok := parseUDPHeader(tc.in)
		if ok != tc.ok || host != tc.host {
			t.Errorf("parseUDPHeader(% x) = %q %v, want %q %v", tc.in, host, ok, tc.host, tc.ok)
		}
	}
}
