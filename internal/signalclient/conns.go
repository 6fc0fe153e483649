package signalclient

import (
	"context"
	"net"
	"net/http"
	"sync"
)

// conns tracks the connections of a transport the client made itself, so
// that Run can close them when it returns: CloseIdleConnections alone races
// with the HTTP/2 transport forgetting the stream that just ended, and the
// connection would linger until its idle timeout.
type conns struct {
	mu  sync.Mutex
	set map[*trackedConn]struct{}
}

type trackedConn struct {
	net.Conn
	owner *conns
}

func (c *trackedConn) Close() error {
	c.owner.mu.Lock()
	delete(c.owner.set, c)
	c.owner.mu.Unlock()
	return c.Conn.Close()
}

// track wraps t's dialer.
func track(t *http.Transport) *conns {
	cs := &conns{set: make(map[*trackedConn]struct{})}
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

func (cs *conns) closeAll() {
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
