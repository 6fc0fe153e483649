package udpgso

import (
	"bytes"
	"net"
	"testing"
	"time"
)

// One Send of a buffer of 2.5 segments arrives as three datagrams, the
// last one shorter.
func TestSendSegments(t *testing.T) {
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
	if !Supported(send) {
		t.Skip("no UDP GSO here")
	}
	buf := append(append(bytes.Repeat([]byte{1}, 1000), bytes.Repeat([]byte{2}, 1000)...), bytes.Repeat([]byte{3}, 500)...)
	if err := Send(send, buf, 1000, recv.LocalAddr().(*net.UDPAddr).AddrPort()); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 2000)
	for i, want := range []int{1000, 1000, 500} {
		_ = recv.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, err := recv.Read(got)
		if err != nil {
			t.Fatalf("datagram %d: %v", i, err)
		}
		if n != want || got[0] != byte(i+1) || got[n-1] != byte(i+1) {
			t.Fatalf("datagram %d: %d bytes of %d, want %d bytes of %d", i, n, got[0], want, i+1)
		}
	}
}
