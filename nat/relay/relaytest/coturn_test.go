package relaytest

import (
	"errors"
	"net"
	"strconv"
	"testing"
)

// TestRunCoturnSaysPortClash: turnserver told a port another process holds
// is an ErrPortClash (StartCoturn then retries on other ports), not a server
// that seems to answer through the other process.
func TestRunCoturnSaysPortClash(t *testing.T) {
	NeedBinary(t, TurnServerBin)
	u, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	port := u.LocalAddr().(*net.UDPAddr).Port
	l, err := net.Listen("tcp4", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		t.Skipf("tcp port %d busy too: %v", port, err)
	}
	defer l.Close()
	c, err := RunCoturn("s", "r", port, min(FreePort(t), 65535-50), t.TempDir())
	if err == nil {
		c.Stop()
	}
	if !errors.Is(err, ErrPortClash) {
		t.Fatalf("RunCoturn on a taken port: %v, want ErrPortClash", err)
	}
	// And StartCoturn finds other ports.
	if c := StartCoturn(t, "s", "r"); c.Addr == "" {
		t.Fatal("no address")
	}
}
