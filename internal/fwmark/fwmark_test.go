package fwmark

import (
	"net"
	"os"
	"runtime"
	"testing"
)

func TestControlMarksSockets(t *testing.T) {
	if runtime.GOOS != "linux" || os.Geteuid() != 0 {
		t.Skip("socket marks need Linux and root")
	}
	lc := net.ListenConfig{Control: Control}
	pc, err := lc.ListenPacket(t.Context(), "udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	if got := Get(pc.(*net.UDPConn)); got != Mark {
		t.Fatalf("mark %#x, want %#x", got, Mark)
	}
	plain, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	if got := Get(plain); got != 0 {
		t.Fatalf("unmarked socket has mark %#x", got)
	}
	Set(plain)
	if got := Get(plain); got != Mark {
		t.Fatalf("Set: mark %#x, want %#x", got, Mark)
	}
}
