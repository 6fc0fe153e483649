package peerconn

import (
	"net"
)

// A relay session's conn stays WireGuard's path to the peer until the
// agent sets another one, and the agent may close the session first: the
// peer went offline and nothing replaced the relayed path, or a new
// session is still looking. pion's ice.Conn answers every call after its
// agent closed with "the agent is closed", which the device took for a
// failure: WireGuard logged an error for each keepalive it sent on the
// path (every 25 s), and the bind's reader retried reads on the closed
// agent. Once the session is closed, relayConn behaves like a path into a
// machine that left: reads end with net.ErrClosed (the device's reader
// stops), and writes go nowhere, as they do on a direct path to a
// departed peer; WireGuard's own timers and the agent's path machine deal
// with a path that carries nothing.

func (c *relayConn) closed() bool {
	select {
	case <-c.s.ctx.Done():
		return true
	default:
		return false
	}
}

// Read reads from pion's conn; net.ErrClosed once the session is closed.
func (c *relayConn) Read(p []byte) (int, error) {
	if c.closed() {
		return 0, net.ErrClosed
	}
	n, err := c.Conn.Read(p)
	if err != nil && c.closed() {
		return 0, net.ErrClosed
	}
	return n, err
}

// Write writes through pion's conn; once the session is closed the packet
// is dropped.
func (c *relayConn) Write(p []byte) (int, error) {
	if c.closed() {
		return len(p), nil
	}
	n, err := c.Conn.Write(p)
	if err != nil && c.closed() {
		return len(p), nil
	}
	return n, err
}
