package relay

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"slices"
	"sync"
	"time"
)

// ALPN protocol ids.
const (
	// ALPNTURN is the ALPN id of TURN (RFC 7443).
	ALPNTURN = "stun.turn"
	alpnH2   = "h2"
	alpnH1   = "http/1.1"
)

// TLS handshake limits of SplitTLS and TURNOverTLS.
const (
	HandshakeTimeout = 10 * time.Second
	// maxHandshakes bounds handshakes in progress; connections beyond it
	// are closed at once rather than queued.
	maxHandshakes = 1024
	// acceptQueue is how many handshaken connections may wait for Accept.
	acceptQueue = 64
)

// SplitTLS shares one TCP listener (the HTTPS port) between HTTP and TURN
// over TLS. It accepts raw TCP, completes each TLS handshake in its own
// goroutine under HandshakeTimeout (a slow or silent client delays nobody
// else), and routes by the negotiated ALPN protocol:
//
//   - "stun.turn": turnLn. coturn's client offers "http/1.1", "stun.turn"
//     and "stun.nat-discovery"; the server prefers "stun.turn".
//   - anything else ("h2", "http/1.1", "acme-tls/1"): httpLn, as
//     *tls.Conn with the handshake done, so net/http serves HTTP/2 on it.
//   - no ALPN: pion/ice's TURN client offers none, and neither does a Go
//     HTTP/1-only client (a Prometheus scraper, say). Both speak first, so
//     the first byte decides: a STUN message (RFC 5389: first two bits 0)
//     goes to turnLn, anything else to httpLn. These connections are
//     wrapped to replay that byte, so net/http sees no *tls.Conn and serves
//     them HTTP/1.1 with Request.TLS nil.
//
// cfg is cloned; "stun.turn" is put first in its NextProtos and "h2" and
// "http/1.1" appended when missing. The raw listener is closed when both
// returned listeners are.
func SplitTLS(ln net.Listener, cfg *tls.Config) (httpLn, turnLn net.Listener) {
	c := cfg.Clone()
	protos := []string{ALPNTURN}
	for _, p := range c.NextProtos {
		if p != ALPNTURN {
			protos = append(protos, p)
		}
	}
	for _, p := range []string{alpnH2, alpnH1} {
		if !slices.Contains(protos, p) {
			protos = append(protos, p)
		}
	}
	c.NextProtos = protos
	m := newTLSMux(ln, c, 2)
	httpLn, turnLn = m.subs[0], m.subs[1]
	m.route = func(proto string, first byte) *subListener {
		if proto == ALPNTURN || proto == "" && first < 0x40 {
			return m.subs[1]
		}
		return m.subs[0]
	}
	m.sniff = true
	go m.acceptLoop()
	return httpLn, turnLn
}

// TURNOverTLS serves TURN over TLS alone on ln (meshd relay
// --turn-tls-listen): handshakes as in SplitTLS, every connection to the
// returned listener. cfg is cloned with "stun.turn" first in NextProtos
// and HTTP's protocols removed (ACME's "acme-tls/1" stays). Closing the
// returned listener closes ln.
func TURNOverTLS(ln net.Listener, cfg *tls.Config) net.Listener {
	c := cfg.Clone()
	protos := []string{ALPNTURN}
	for _, p := range c.NextProtos {
		if p != ALPNTURN && p != alpnH2 && p != alpnH1 {
			protos = append(protos, p)
		}
	}
	c.NextProtos = protos
	m := newTLSMux(ln, c, 1)
	m.route = func(string, byte) *subListener { return m.subs[0] }
	go m.acceptLoop()
	return m.subs[0]
}

// tlsMux accepts raw connections, handshakes them and queues them on the
// sub-listener their ALPN routes to.
type tlsMux struct {
	raw  net.Listener
	cfg  *tls.Config
	subs []*subListener
	// route picks the sub-listener of a connection by its ALPN protocol
	// and, if sniff and the protocol is "", its first byte.
	route func(proto string, first byte) *subListener
	sniff bool
	sem   chan struct{}

	ctx    context.Context // ends when every sub-listener is closed
	cancel context.CancelFunc
	wg     sync.WaitGroup // accept loop and handshakes

	mu   sync.Mutex
	open int
}

func newTLSMux(raw net.Listener, cfg *tls.Config, n int) *tlsMux {
	ctx, cancel := context.WithCancel(context.Background())
	m := &tlsMux{raw: raw, cfg: cfg, sem: make(chan struct{}, maxHandshakes), ctx: ctx, cancel: cancel, open: n}
	for i := 0; i < n; i++ {
		m.subs = append(m.subs, &subListener{m: m, ch: make(chan net.Conn, acceptQueue), closed: make(chan struct{})})
	}
	m.wg.Add(1)
	return m
}

func (m *tlsMux) acceptLoop() {
	defer m.wg.Done()
	var backoff time.Duration
	for {
		c, err := m.raw.Accept()
		if err != nil {
			if m.ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				m.cancel()
				return
			}
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			select {
			case <-time.After(backoff):
			case <-m.ctx.Done():
				return
			}
			continue
		}
		backoff = 0
		select {
		case m.sem <- struct{}{}:
		default:
			c.Close() // a handshake flood; don't queue it
			continue
		}
		m.wg.Add(1)
		go m.handshake(c)
	}
}

func (m *tlsMux) handshake(c net.Conn) {
	defer m.wg.Done()
	defer func() { <-m.sem }()
	ctx, cancel := context.WithTimeout(m.ctx, HandshakeTimeout)
	defer cancel()
	tc := tls.Server(c, m.cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		c.Close()
		return
	}
	var conn net.Conn = tc
	proto := tc.ConnectionState().NegotiatedProtocol
	var first byte
	if m.sniff && proto == "" {
		deadline, _ := ctx.Deadline()
		_ = tc.SetReadDeadline(deadline)
		// Shutdown must not wait for a silent client's deadline.
		stop := context.AfterFunc(ctx, func() { _ = tc.SetReadDeadline(time.Now()) })
		var b [1]byte
		_, err := io.ReadFull(tc, b[:])
		if !stop() || err != nil {
			tc.Close()
			return
		}
		_ = tc.SetReadDeadline(time.Time{})
		first = b[0]
		conn = &replayConn{Conn: tc, first: b[:]}
	}
	sub := m.route(proto, first)
	select {
	case sub.ch <- conn:
	case <-sub.closed:
		conn.Close()
	case <-ctx.Done(): // nobody accepts in time
		conn.Close()
	}
}

// subClosed closes the raw listener once every sub-listener is closed,
// and waits for the accept loop and handshakes to end.
func (m *tlsMux) subClosed() error {
	m.mu.Lock()
	m.open--
	last := m.open == 0
	m.mu.Unlock()
	if !last {
		return nil
	}
	m.cancel()
	err := m.raw.Close()
	m.wg.Wait()
	for _, s := range m.subs {
		s.drain()
	}
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	return err
}

// subListener is one side of a tlsMux.
type subListener struct {
	m      *tlsMux
	ch     chan net.Conn
	closed chan struct{}
	once   sync.Once
}

var _ net.Listener = (*subListener)(nil)

// Accept returns the next handshaken connection: a *tls.Conn, or one
// wrapping it for a connection without ALPN (see SplitTLS).
func (s *subListener) Accept() (net.Conn, error) {
	select {
	case c := <-s.ch:
		return c, nil
	case <-s.closed:
		return nil, net.ErrClosed
	case <-s.m.ctx.Done():
		select {
		case c := <-s.ch:
			return c, nil
		default:
		}
		return nil, net.ErrClosed
	}
}

// Close stops this side; connections queued for it are closed.
func (s *subListener) Close() error {
	err := net.ErrClosed
	s.once.Do(func() {
		close(s.closed)
		s.drain()
		err = s.m.subClosed()
	})
	return err
}

func (s *subListener) drain() {
	for {
		select {
		case c := <-s.ch:
			c.Close()
		default:
			return
		}
	}
}

func (s *subListener) Addr() net.Addr { return s.m.raw.Addr() }

// replayConn returns first before the rest of Conn.
type replayConn struct {
	net.Conn
	first []byte
}

func (c *replayConn) Read(p []byte) (int, error) {
	if len(c.first) > 0 {
		n := copy(p, c.first)
		c.first = c.first[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}
