package peerconn

import (
	"net"
	"testing"
	"time"

	"github.com/pion/stun/v2"
	"go.uber.org/zap/zaptest"
)

func TestRelayURLsPreferUDPOnceItAnswers(t *testing.T) {
	srv, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	go func() { // a STUN server that answers binding requests
		buf := make([]byte, 1500)
		for {
			n, from, err := srv.ReadFrom(buf)
			if err != nil {
				return
			}
			req := &stun.Message{Raw: append([]byte(nil), buf[:n]...)}
			if req.Decode() != nil {
				continue
			}
			resp, _ := stun.Build(req, stun.BindingSuccess, &stun.XORMappedAddress{IP: from.(*net.UDPAddr).IP, Port: from.(*net.UDPAddr).Port}, stun.Fingerprint)
			srv.WriteTo(resp.Raw, from)
		}
	}()
	c, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	m := NewMux(c, nil, zaptest.NewLogger(t))
	defer m.Close()
	addr := srv.LocalAddr().String()
	s, _ := ParseServers([]RelayServer{{URLs: []string{
		"turn:" + addr + "?transport=udp", "turn:" + addr + "?transport=tcp", "turns:" + addr + "?transport=tcp",
	}, Username: "u", Credential: "p"}})
	if got := m.RelayURLs(s); len(got.TURN) != 3 {
		t.Fatalf("before any STUN answer: %v, want every transport", got.TURN)
	}
	if _, err := m.GetXORMappedAddr(srv.LocalAddr(), 3*time.Second); err != nil {
		t.Fatal(err)
	}
	got := m.RelayURLs(s)
	if len(got.TURN) != 1 || got.TURN[0].Proto != stun.ProtoTypeUDP {
		t.Fatalf("after a STUN answer: %v, want only TURN over UDP", got.TURN)
	}
}

// TestRelayURLsForgetUDP: after ForgetRelayAnswers every transport is
// offered again, until the STUN port answers anew.
func TestRelayURLsForgetUDP(t *testing.T) {
	srv, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := srv.ReadFrom(buf)
			if err != nil {
				return
			}
			req := &stun.Message{Raw: append([]byte(nil), buf[:n]...)}
			if req.Decode() != nil {
				continue
			}
			resp, _ := stun.Build(req, stun.BindingSuccess, &stun.XORMappedAddress{IP: from.(*net.UDPAddr).IP, Port: from.(*net.UDPAddr).Port}, stun.Fingerprint)
			srv.WriteTo(resp.Raw, from)
		}
	}()
	c, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// A zero TTL: every lookup asks the server again.
	m := newMux(c, nil, zaptest.NewLogger(t), time.Nanosecond)
	defer m.Close()
	addr := srv.LocalAddr().String()
	s, _ := ParseServers([]RelayServer{{URLs: []string{
		"turn:" + addr + "?transport=udp", "turn:" + addr + "?transport=tcp", "turns:" + addr + "?transport=tcp",
	}, Username: "u", Credential: "p"}})
	if _, err := m.GetXORMappedAddr(srv.LocalAddr(), 3*time.Second); err != nil {
		t.Fatal(err)
	}
	if got := m.RelayURLs(s); len(got.TURN) != 1 {
		t.Fatalf("after a STUN answer: %v, want only TURN over UDP", got.TURN)
	}
	m.ForgetRelayAnswers(s)
	if got := m.RelayURLs(s); len(got.TURN) != 3 {
		t.Fatalf("after ForgetRelayAnswers: %v, want every transport", got.TURN)
	}
	if _, err := m.GetXORMappedAddr(srv.LocalAddr(), 3*time.Second); err != nil {
		t.Fatal(err)
	}
	if got := m.RelayURLs(s); len(got.TURN) != 1 {
		t.Fatalf("after a new answer: %v, want only TURN over UDP again", got.TURN)
	}
}
