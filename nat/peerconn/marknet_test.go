package peerconn

import (
	"net"
	"os"
	"runtime"
	"syscall"
	"testing"

	"meshd/internal/fwmark"
)

// TestMarkedNetMarksTURNSockets: every socket a relay session opens
// towards TURN servers (UDP, TCP) carries the agent's mark, so it skips
// the mesh's routes.
func TestMarkedNetMarksTURNSockets(t *testing.T) {
	if runtime.GOOS != "linux" || os.Geteuid() != 0 {
		t.Skip("socket marks need Linux and root")
	}
	n, err := MarkedNet(nil)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.ListenTCP("tcp4", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		if c, err := ln.Accept(); err == nil {
			c.Close()
		}
	}()
	pc, err := n.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	uc, err := n.DialUDP("udp4", nil, pc.LocalAddr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer uc.Close()
	tc, err := n.DialTCP("tcp4", nil, ln.Addr().(*net.TCPAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	for name, c := range map[string]any{"ListenPacket": pc, "DialUDP": uc, "DialTCP": tc} {
		sc, ok := c.(syscall.Conn)
		if !ok {
			t.Fatalf("%s: %T is not a system socket", name, c)
		}
		if got := fwmark.Get(sc); got != fwmark.Mark {
			t.Errorf("%s: mark %#x, want %#x", name, got, fwmark.Mark)
		}
	}
}
