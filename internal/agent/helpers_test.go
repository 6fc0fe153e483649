package agent

import (
	"net"
	"sync/atomic"
	"testing"

	"github.com/pion/turn/v3"

	controlv1 "meshd/api/control/v1"
)

// blocker switches a blockConn.
type blocker struct{ on atomic.Bool }

// blockConn drops every write while its blocker is on: a NAT that lets
// nothing out, as far as the direct path is concerned.
type blockConn struct {
	net.PacketConn
	b *blocker
}

func (c *blockConn) WriteTo(p []byte, a net.Addr) (int, error) {
	if c.b.on.Load() {
		return len(p), nil
	}
	return c.PacketConn.WriteTo(p, a)
}

// turnServer runs pion's TURN server on loopback (UDP and TCP) and returns
// it as the map's relay list.
func turnServer(tb testing.TB) []*controlv1.RelayServer {
	tb.Helper()
	udp, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	tcp, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	key := turn.GenerateAuthKey("user", "meshd", "secret")
	gen := &turn.RelayAddressGeneratorStatic{RelayAddress: net.ParseIP("127.0.0.1"), Address: "127.0.0.1"}
	srv, err := turn.NewServer(turn.ServerConfig{
		Realm:             "meshd",
		AuthHandler:       func(u, _ string, _ net.Addr) ([]byte, bool) { return key, u == "user" },
		PacketConnConfigs: []turn.PacketConnConfig{{PacketConn: udp, RelayAddressGenerator: gen}},
		ListenerConfigs:   []turn.ListenerConfig{{Listener: tcp, RelayAddressGenerator: gen}},
	})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { srv.Close() })
	return []*controlv1.RelayServer{{
		Urls: []string{
			"turn:" + udp.LocalAddr().String() + "?transport=udp",
			"turn:" + tcp.Addr().String() + "?transport=tcp",
		},
		Username: "user", Credential: "secret",
	}}
}
