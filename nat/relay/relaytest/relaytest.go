// Package relaytest helps tests and benchmarks exercise TURN servers: a
// pion TURN client with one allocation over UDP, TCP or TLS (the client
// the agent's pion/ice uses), and coturn's turnserver started on loopback.
// Only tests and bench/relay import it.
package relaytest

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/pion/logging"
	"github.com/pion/turn/v3"

	"meshd/internal/turncred"
)

// Transports a client reaches a TURN server over.
const (
	UDP = "udp"
	TCP = "tcp"
	TLS = "tls"
)

// Credential returns a TURN REST credential for id, valid for ttl from now.
func Credential(secret []byte, id string, ttl time.Duration) turncred.Credential {
	return turncred.Issue(secret, id, time.Now(), ttl)
}

// Allocation is a pion TURN client holding one allocation.
type Allocation struct {
	Client *turn.Client
	// Relay sends to and receives from peers through the server.
	Relay net.PacketConn
	// Conn is the client's socket or connection to the server.
	Conn net.PacketConn
}

// RelayAddr is the allocation's relayed address.
func (a *Allocation) RelayAddr() *net.UDPAddr { return a.Relay.LocalAddr().(*net.UDPAddr) }

// Close deallocates and closes the client.
func (a *Allocation) Close() {
	_ = a.Relay.Close()
	a.Client.Close()
	_ = a.Conn.Close()
}

// Allocate connects to server over transport (UDP, TCP or TLS; tlsConfig
// only for TLS) like pion/ice does and allocates with cred. The
// allocation is closed in cleanup.
func Allocate(tb testing.TB, server, transport string, cred turncred.Credential, tlsConfig *tls.Config) (*Allocation, error) {
	tb.Helper()
	conn, err := Dial(server, transport, tlsConfig)
	if err != nil {
		return nil, err
	}
	a, err := AllocateOn(tb, conn, server, cred)
	if err != nil {
		conn.Close()
		return nil, err
	}
	return a, nil
}

// Dial opens the client's side of a TURN connection: a UDP socket on
// loopback, or a TCP/TLS connection framed like pion/ice frames it.
func Dial(server, transport string, tlsConfig *tls.Config) (net.PacketConn, error) {
	switch transport {
	case UDP:
		return net.ListenPacket("udp4", "127.0.0.1:0")
	case TCP:
		c, err := net.DialTimeout("tcp4", server, 5*time.Second)
		if err != nil {
			return nil, err
		}
		return turn.NewSTUNConn(c), nil
	case TLS:
		d := &net.Dialer{Timeout: 5 * time.Second}
		c, err := tls.DialWithDialer(d, "tcp4", server, tlsConfig)
		if err != nil {
			return nil, err
		}
		return turn.NewSTUNConn(c), nil
	}
	return nil, fmt.Errorf("relaytest: unknown transport %q", transport)
}

// AllocateOn allocates through conn, which it takes over.
func AllocateOn(tb testing.TB, conn net.PacketConn, server string, cred turncred.Credential) (*Allocation, error) {
	tb.Helper()
	c, err := turn.NewClient(&turn.ClientConfig{
		STUNServerAddr: server,
		TURNServerAddr: server,
		Conn:           conn,
		Username:       cred.Username,
		Password:       cred.Password,
		LoggerFactory:  QuietLogger{},
	})
	if err != nil {
		return nil, err
	}
	if err := c.Listen(); err != nil {
		c.Close()
		return nil, err
	}
	relay, err := c.Allocate()
	if err != nil {
		c.Close()
		return nil, err
	}
	a := &Allocation{Client: c, Relay: relay, Conn: conn}
	tb.Cleanup(a.Close)
	return a, nil
}

// Exchange sends n packets of size bytes from a to b's relayed address
// and reads them on b, resending until every sequence number has arrived
// or the deadline passes (UDP may drop a few, and the first ones race
// pion's permission). It returns the payload bytes received.
func Exchange(tb testing.TB, a, b *Allocation, n, size int) int {
	tb.Helper()
	// b must permit a's relayed address before a's packets reach it.
	if _, err := b.Relay.WriteTo([]byte("hello"), a.RelayAddr()); err != nil {
		tb.Fatalf("permission write: %v", err)
	}
	got := make([]bool, n)
	missing := n
	total := 0
	buf := make([]byte, 2048)
	deadline := time.Now().Add(20 * time.Second)
	for round := 0; missing > 0 && time.Now().Before(deadline) && round < 200; round++ {
		for i := range got {
			if got[i] {
				continue
			}
			pkt := make([]byte, size)
			pkt[0], pkt[1] = byte(i>>8), byte(i)
			for j := 2; j < size; j++ {
				pkt[j] = byte(i + j)
			}
			if _, err := a.Relay.WriteTo(pkt, b.RelayAddr()); err != nil {
				tb.Fatalf("write %d: %v", i, err)
			}
		}
		_ = b.Relay.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		for missing > 0 {
			m, from, err := b.Relay.ReadFrom(buf)
			if err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					break
				}
				tb.Fatalf("read: %v", err)
			}
			if from.String() != a.RelayAddr().String() {
				tb.Fatalf("packet from %s, want %s", from, a.RelayAddr())
			}
			if m != size {
				continue // a's hello or junk
			}
			i := int(buf[0])<<8 | int(buf[1])
			if i >= n || got[i] {
				continue
			}
			for j := 2; j < size; j++ {
				if buf[j] != byte(i+j) {
					tb.Fatalf("packet %d corrupted at byte %d", i, j)
				}
			}
			got[i] = true
			missing--
			total += m
		}
	}
	_ = b.Relay.SetReadDeadline(time.Time{})
	if missing > 0 {
		tb.Fatalf("%d of %d packets never arrived through the relay", missing, n)
	}
	return total
}

// QuietLogger is a pion logging.LoggerFactory that drops everything.
type QuietLogger struct{}

func (QuietLogger) NewLogger(string) logging.LeveledLogger { return quietLeveled{} }

type quietLeveled struct{}

func (quietLeveled) Trace(string)          {}
func (quietLeveled) Tracef(string, ...any) {}
func (quietLeveled) Debug(string)          {}
func (quietLeveled) Debugf(string, ...any) {}
func (quietLeveled) Info(string)           {}
func (quietLeveled) Infof(string, ...any)  {}
func (quietLeveled) Warn(string)           {}
func (quietLeveled) Warnf(string, ...any)  {}
func (quietLeveled) Error(string)          {}
func (quietLeveled) Errorf(string, ...any) {}
