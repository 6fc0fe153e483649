package peerconn

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/pion/stun/v2"
	"github.com/pion/transport/v3"
	"golang.org/x/net/proxy"
)

// TURN over TCP and TLS.
//
// Left to itself, pion/ice dials TURN/TCP and wraps TURN/TLS in a TLS
// client of its own, so what its TURN client writes is encrypted before
// any conn of ours sees it, and its requests could not be signed again
// with a newer credential (resign.go). Given a ProxyDialer, pion/ice uses
// the conn that dialer returns for both turn: and turns: over TCP as is,
// with no TLS of its own. The session's dialer (turnDialer) therefore
// dials, does the TLS handshake itself for the addresses of turns: URLs
// (the same as pion's: no certificate check, see the package comment),
// and returns a conn whose writes are signed again on their way into
// TLS. pion writes one whole STUN message or ChannelData per Write, so a
// Write that is exactly one authenticated TURN request is the only thing
// changed; ChannelData and whatever else passes as written.
//
// pion hands the dialer the URL's host:port only, not its scheme: an
// address listed both as turn: over TCP and as turns: gets TLS and plain
// dials in turn (pion dials once per URL), which only swaps the two
// candidates' protocol labels.

// turnDialTimeout bounds a TURN/TCP connect plus its TLS handshake (the
// dialer has no context; pion's gathering waits for it).
const turnDialTimeout = 10 * time.Second

// newRelayNet makes a relay session's network over n, with the session's
// first TURN credentials, the addresses of its turns: URLs, and the
// lifetime its allocations ask for (zero: the server's default).
func newRelayNet(n transport.Net, turn []*stun.URI, lifetime time.Duration) *relayNet {
	rn := &relayNet{Net: n, tcp: map[string]*tcpScheme{}}
	rn.creds.set(turn)
	rn.creds.allocLifetime = lifetime
	for _, u := range turn {
		if u.Proto != stun.ProtoTypeTCP {
			continue
		}
		addr := net.JoinHostPort(u.Host, strconv.Itoa(u.Port))
		// pion dials fmt.Sprintf("%s:%d", host, port), not JoinHostPort.
		key := u.Host + ":" + strconv.Itoa(u.Port)
		sc := rn.tcp[key]
		if sc == nil {
			sc = &tcpScheme{host: u.Host, addr: addr}
			rn.tcp[key] = sc
		}
		if u.Scheme == stun.SchemeTypeTURNS {
			sc.tls = true
		} else {
			sc.plain = true
		}
	}
	return rn
}

// tcpScheme is what the TURN URLs of one host:port over TCP ask for.
type tcpScheme struct {
	host, addr string
	tls, plain bool
	mu         sync.Mutex
	dials      int
}

// useTLS tells whether the next dial of the address is a turns: one.
func (sc *tcpScheme) useTLS() bool {
	if !sc.tls || !sc.plain {
		return sc.tls
	}
	sc.mu.Lock()
	defer sc.mu.Unlock()
	sc.dials++
	return sc.dials%2 == 1
}

// dialer is the ProxyDialer of the session's pion agent.
func (n *relayNet) dialer() proxy.Dialer { return turnDialer{n} }

type turnDialer struct{ n *relayNet }

func (d turnDialer) Dial(network, address string) (net.Conn, error) {
	sc := d.n.tcp[address]
	host, dialAddr := "", address
	if sc != nil {
		host, dialAddr = sc.host, sc.addr
	}
	c, err := d.n.Net.CreateDialer(&net.Dialer{Timeout: turnDialTimeout}).Dial(network, dialAddr)
	if err != nil {
		return nil, fmt.Errorf("peerconn: dial TURN server %s: %w", dialAddr, err)
	}
	if sc != nil && sc.useTLS() {
		tc := tls.Client(c, &tls.Config{
			ServerName:         host,
			InsecureSkipVerify: true, // see the package comment
			MinVersion:         tls.VersionTLS12,
		})
		ctx, cancel := context.WithTimeout(context.Background(), turnDialTimeout)
		defer cancel()
		if err := tc.HandshakeContext(ctx); err != nil {
			_ = c.Close()
			return nil, fmt.Errorf("peerconn: TLS to TURN server %s: %w", dialAddr, err)
		}
		c = tc
	}
	return &resignConn{Conn: c, sign: newSigner(&d.n.creds)}, nil
}

// resignConn is a TURN/TCP or TURN/TLS conn whose writes are signed again
// with the newest credential (resign.go), and whose reads are watched for
// the server's refusal of that (signer.in).
type resignConn struct {
	net.Conn
	sign *signer
	scan stunScanner // only pion's one read goroutine reads
}

func (c *resignConn) Write(p []byte) (int, error) {
	if _, err := c.Conn.Write(c.sign.out(p)); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (c *resignConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 && !c.sign.fixed.Load() {
		c.scan.feed(p[:n], c.sign.in)
	}
	return n, err
}
