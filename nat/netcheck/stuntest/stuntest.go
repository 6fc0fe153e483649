// Package stuntest is a minimal STUN binding server for tests: it answers
// every binding request with the sender's address, as a relay does. Tests of
// nat/netcheck and the lab use it for a second STUN destination.
package stuntest

import (
	"net"
	"sync"
	"testing"

	"github.com/pion/stun/v2"
)

// Serve answers binding requests on c until c is closed. It closes c when
// tb ends and waits for its reader.
func Serve(tb testing.TB, c net.PacketConn) { ServeMapped(tb, c, nil) }

// ServeMapped is Serve that reports mapped(sender) instead of the sender
// (nil: the sender), so a test can play a NAT that maps per destination.
func ServeMapped(tb testing.TB, c net.PacketConn, mapped func(*net.UDPAddr) *net.UDPAddr) {
	tb.Helper()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		buf := make([]byte, 1500)
		for {
			n, from, err := c.ReadFrom(buf)
			if err != nil {
				return
			}
			m := &stun.Message{Raw: append([]byte(nil), buf[:n]...)}
			if m.Decode() != nil || m.Type != stun.BindingRequest {
				continue
			}
			ua, ok := from.(*net.UDPAddr)
			if !ok {
				continue
			}
			if mapped != nil {
				ua = mapped(ua)
			}
			resp, err := stun.Build(stun.NewTransactionIDSetter(m.TransactionID), stun.BindingSuccess,
				&stun.XORMappedAddress{IP: ua.IP, Port: ua.Port}, stun.Fingerprint)
			if err != nil {
				continue
			}
			c.WriteTo(resp.Raw, from)
		}
	}()
	tb.Cleanup(func() { c.Close(); wg.Wait() })
}

// Listen starts a server on a fresh loopback UDP port and returns its
// address.
func Listen(tb testing.TB) *net.UDPAddr {
	tb.Helper()
	c, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	Serve(tb, c)
	return c.LocalAddr().(*net.UDPAddr)
}
