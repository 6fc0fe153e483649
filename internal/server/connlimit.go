package server

import (
	"container/list"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// ConnLimits bound the TCP connections of one listener, so that clients
// that open connections and say nothing cannot lock honest clients out of
// the port.
type ConnLimits struct {
	// PerSource bounds the connections of one source address (an IPv6
	// source by its /64) that are pending or idle. Busy ones do not count:
	// behind one NAT there may be thousands of agents, each holding a
	// Sync and a signal stream.
	PerSource int
	// Pending bounds connections that are not established yet: accepted,
	// with their TLS handshake or first request still to come. An honest
	// handshake takes round trips; the oldest pending connections are the
	// silent ones, and they make room for new ones.
	Pending int
	// Total bounds all connections. When it is reached the oldest pending
	// connection makes room, else the longest idle one; a connection with
	// a request or stream in flight (a Sync or signal stream, a TURN
	// session) is never closed to make room.
	Total int
	// Establish is how long a new connection has to finish its TLS
	// handshake and send its first request (HTTP/2: its preface).
	Establish time.Duration
}

// DefaultConnLimits are the limits of every meshd HTTPS port. Pending stays
// below the TLS front's bound on handshakes in progress, so that the front
// never turns a connection away itself. Total is lowered to half the file
// descriptor limit when that is smaller.
func DefaultConnLimits() ConnLimits {
	l := ConnLimits{PerSource: 256, Pending: 512, Total: 8192, Establish: 5 * time.Second}
	if n, ok := fdLimit(); ok && n/2 < uint64(l.Total) {
		l.Total = max(int(n/2), 64)
		l.Pending = min(l.Pending, l.Total/2)
	}
	return l
}

// WithTotal returns l with Total n (n > 0; else l as it is), and Pending
// no more than half of it.
func (l ConnLimits) WithTotal(n int) ConnLimits {
	if n > 0 {
		l.Total = n
		l.Pending = max(min(l.Pending, n/2), 1)
	}
	return l
}

// Connection states as the limiter sees them.
const (
	connPending = iota // accepted, not established
	connIdle           // established, nothing in flight
	connActive         // a request, stream or TURN session in flight
	connGone
)

// ConnLimiter is a net.Listener that enforces ConnLimits on the
// connections of the listener it wraps. It learns whether a connection is
// established and busy from the HTTP server's connection states (a Server
// whose listener came from LimitConns or Listen reports them) and from
// Established for connections another server takes.
type ConnLimiter struct {
	ln  net.Listener
	lim ConnLimits
	log *zap.Logger

	mu      sync.Mutex
	conns   map[connKey]*limitedConn
	sources map[netip.Addr]*connSource
	pending list.List // *limitedConn, oldest first
	idle    list.List // *limitedConn, longest idle first
	total   int

	shed      atomic.Int64 // connections closed to make room, or refused
	lastWarn  atomic.Int64 // unix nanoseconds
	warnEvery time.Duration
}

type connKey struct{ local, remote netip.AddrPort }

type connSource struct {
	n       int
	pending list.List
	idle    list.List
}

// NewConnLimiter wraps ln, a TCP listener.
func NewConnLimiter(ln net.Listener, lim ConnLimits, log *zap.Logger) *ConnLimiter {
	return &ConnLimiter{ln: ln, lim: lim, log: log, conns: make(map[connKey]*limitedConn),
		sources: make(map[netip.Addr]*connSource), warnEvery: time.Minute}
}

// Accept returns the next connection the limits let in, closing the ones
// they shed.
func (l *ConnLimiter) Accept() (net.Conn, error) {
	for {
		c, err := l.ln.Accept()
		if err != nil {
			return nil, err
		}
		if lc := l.admit(c); lc != nil {
			return lc, nil
		}
	}
}

func (l *ConnLimiter) Close() error   { return l.ln.Close() }
func (l *ConnLimiter) Addr() net.Addr { return l.ln.Addr() }

// Shed is how many connections the limits closed or refused so far.
func (l *ConnLimiter) Shed() int64 { return l.shed.Load() }

func keyOf(c net.Conn) (connKey, bool) {
	la, ok1 := c.LocalAddr().(*net.TCPAddr)
	ra, ok2 := c.RemoteAddr().(*net.TCPAddr)
	if !ok1 || !ok2 {
		return connKey{}, false
	}
	return connKey{la.AddrPort(), ra.AddrPort()}, true
}

// sourceOf is who a connection counts against: its IPv4 address, or the
// /64 of its IPv6 address (one host often holds a whole /64).
func sourceOf(k connKey) netip.Addr {
	a := k.remote.Addr().Unmap()
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p.Addr()
	}
	return a
}

func (l *ConnLimiter) admit(c net.Conn) *limitedConn {
	k, ok := keyOf(c)
	if !ok {
		_ = c.Close()
		return nil
	}
	src := sourceOf(k)
	lc := &limitedConn{Conn: c, l: l, key: k, src: src, state: connPending}
	var victims []*limitedConn
	l.mu.Lock()
	s := l.sources[src]
	if s == nil {
		s = &connSource{}
		l.sources[src] = s
	}
	refuse := false
	if s.pending.Len()+s.idle.Len() >= l.lim.PerSource {
		v := oldest(&s.pending, &s.idle)
		if v == nil {
			refuse = true
		} else {
			l.removeLocked(v)
			victims = append(victims, v)
		}
	}
	if !refuse && l.total >= l.lim.Total {
		v := oldest(&l.pending, &l.idle)
		if v == nil {
			refuse = true
		} else {
			l.removeLocked(v)
			victims = append(victims, v)
		}
	}
	if !refuse && l.pending.Len() >= l.lim.Pending {
		v := oldest(&l.pending)
		l.removeLocked(v)
		victims = append(victims, v)
	}
	if refuse {
		if s.n == 0 {
			delete(l.sources, src)
		}
	} else {
		l.conns[k] = lc
		l.total++
		s.n++
		lc.g = l.pending.PushBack(lc)
		lc.s = s.pending.PushBack(lc)
		lc.timer = time.AfterFunc(l.lim.Establish, lc.establishTimeout)
	}
	l.mu.Unlock()
	for _, v := range victims {
		_ = v.Conn.Close()
	}
	n := len(victims)
	if refuse {
		_ = c.Close()
		n++
	}
	if n > 0 {
		l.noteShed(n)
	}
	if refuse {
		return nil
	}
	return lc
}

// oldest returns the front of the first non-empty list.
func oldest(lists ...*list.List) *limitedConn {
	for _, ls := range lists {
		if e := ls.Front(); e != nil {
			return e.Value.(*limitedConn)
		}
	}
	return nil
}

func (l *ConnLimiter) noteShed(n int) {
	total := l.shed.Add(int64(n))
	now := time.Now().UnixNano()
	last := l.lastWarn.Load()
	if now-last >= int64(l.warnEvery) && l.lastWarn.CompareAndSwap(last, now) {
		l.log.Warn("closing connections over the limits (many silent or idle connections: a flood, or limits too low for this load)",
			zap.Int64("closed_so_far", total), zap.Int("per_source", l.lim.PerSource), zap.Int("total", l.lim.Total))
	}
}

// unlinkLocked takes c off the pending and idle lists.
func (l *ConnLimiter) unlinkLocked(c *limitedConn) {
	s := l.sources[c.src]
	switch c.state {
	case connPending:
		l.pending.Remove(c.g)
		s.pending.Remove(c.s)
	case connIdle:
		l.idle.Remove(c.g)
		s.idle.Remove(c.s)
	}
	c.g, c.s = nil, nil
}

// removeLocked forgets c; its caller closes it.
func (l *ConnLimiter) removeLocked(c *limitedConn) {
	if c.state == connGone {
		return
	}
	l.unlinkLocked(c)
	if c.timer != nil {
		c.timer.Stop()
	}
	c.state = connGone
	delete(l.conns, c.key)
	l.total--
	s := l.sources[c.src]
	if s.n--; s.n == 0 {
		delete(l.sources, c.src)
	}
}

// setState moves the connection with key k to state.
func (l *ConnLimiter) setState(k connKey, state int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	c := l.conns[k]
	if c == nil || c.state == state {
		return
	}
	if c.state == connPending && c.timer != nil {
		c.timer.Stop()
	}
	l.unlinkLocked(c)
	c.state = state
	if state == connIdle {
		c.g = l.idle.PushBack(c)
		c.s = l.sources[c.src].idle.PushBack(c)
	}
}

// ConnState is an http.Server ConnState hook: it tells the limiter which
// connections are established and which have requests in flight. c may
// be the limiter's connection or one wrapping it (TLS).
func (l *ConnLimiter) ConnState(c net.Conn, st http.ConnState) {
	var state int
	switch st {
	case http.StateActive:
		state = connActive
	case http.StateIdle:
		state = connIdle
	default: // New: not established until its first request; Closed and Hijacked: Close says
		return
	}
	if k, ok := keyOf(c); ok {
		l.setState(k, state)
	}
}

// Established wraps a listener that hands out connections of this limiter
// to a server other than the HTTP one (TURN over TLS on the shared port):
// every connection it accepts counts as busy, and that server's own
// timeouts end it.
func (l *ConnLimiter) Established(ln net.Listener) net.Listener {
	return &establishedListener{Listener: ln, l: l}
}

type establishedListener struct {
	net.Listener
	l *ConnLimiter
}

func (e *establishedListener) Accept() (net.Conn, error) {
	c, err := e.Listener.Accept()
	if err == nil {
		if k, ok := keyOf(c); ok {
			e.l.setState(k, connActive)
		}
	}
	return c, err
}

// limitedConn is an accepted connection the limiter keeps track of.
type limitedConn struct {
	net.Conn
	l   *ConnLimiter
	key connKey
	src netip.Addr

	// Guarded by l.mu.
	state int
	g, s  *list.Element // in the limiter's and its source's list of its state
	timer *time.Timer

	once sync.Once
}

func (c *limitedConn) Close() error {
	c.once.Do(func() {
		c.l.mu.Lock()
		c.l.removeLocked(c)
		c.l.mu.Unlock()
	})
	return c.Conn.Close()
}

// establishTimeout closes a connection still pending when its time is up.
func (c *limitedConn) establishTimeout() {
	c.l.mu.Lock()
	pending := c.state == connPending
	if pending {
		c.l.removeLocked(c)
	}
	c.l.mu.Unlock()
	if pending {
		_ = c.Conn.Close()
	}
}
