package rpcclient

import (
	"context"
	"net"
	"net/http"
	"sync"
)

// Conns tracks the connections a transport dials, so that their owner can
// close them when it stops: CloseIdleConnections alone races with the
// HTTP/2 transport forgetting a stream that just ended, and the connection
// would linger until its idle timeout (and look like a leak to goleak).
type Conns struct {
	mu  sync.Mutex
	set map[*trackedConn]struct{}
}

type trackedConn struct {
	net.Conn
	owner *Conns
}

func (c *trackedConn) Close() error {
	c.owner.mu.Lock()
	delete(c.owner.set, c)
	c.owner.mu.Unlock()
	return c.Conn.Close()
}

// Track wraps t's dialer and returns the set of its open connections.
func Track(t *http.Transport) *Conns {
	cs := &Conns{set: make(map[*trackedConn]struct{})}
	dial := t.DialContext
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	t.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		tc := &trackedConn{Conn: c, owner: cs}
		cs.mu.Lock()
		cs.set[tc] = struct{}{}
		cs.mu.Unlock()
		return tc, nil
	}
	return cs
}

// CloseAll closes every connection still open.
func (cs *Conns) CloseAll() {
	cs.mu.Lock()
	all := make([]*trackedConn, 0, len(cs.set))
	for c := range cs.set {
		all = append(all, c)
	}
	cs.mu.Unlock()
	for _, c := range all {
		_ = c.Close()
	}
}
