package rpcclient

import (
	"net"
	"net/http"
	"os"
	"runtime"
	"testing"

	"meshd/internal/fwmark"
)

// TestConnectionsCarryTheMark: control and signal connections skip the
// mesh's routing table (policy routing), so a route over the server's
// address never takes them into the tunnel.
func TestConnectionsCarryTheMark(t *testing.T) {
	if runtime.GOOS != "linux" || os.Geteuid() != 0 {
		t.Skip("socket marks need Linux and root")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		if c, err := ln.Accept(); err == nil {
			c.Close()
		}
	}()
	hc, err := New("https://"+ln.Addr().String(), "")
	if err != nil {
		t.Fatal(err)
	}
	c, err := hc.Transport.(*http.Transport).DialContext(t.Context(), "tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got := fwmark.Get(c.(*net.TCPConn)); got != fwmark.Mark {
		t.Fatalf("connection mark %#x, want %#x", got, fwmark.Mark)
	}
}
