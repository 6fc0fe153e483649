package rpcclient

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"time"
)

// ErrSpeaksHTTPS is the error of an http:// client whose server speaks
// HTTPS on that port.
var ErrSpeaksHTTPS = errors.New("the server speaks HTTPS on this port")

// hintDial wraps the dialer of an h2c (http://) client so that a server
// speaking TLS on the port gives a clear error instead of "unexpected EOF".
// h2c opens with the client's preface; an h2c server answers with its
// SETTINGS at once, while meshd (and most HTTPS servers) answer with an
// HTTP/1 400 or a TLS alert and older servers close the connection (then
// the port is probed with a TLS handshake). The answer is awaited in the
// write of the preface, so that the error is the one the transport returns.
func hintDial(dial func(ctx context.Context, network, addr string) (net.Conn, error)) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return &hintConn{Conn: c, network: network, addr: addr}, nil
	}
}

// hintWait bounds the wait for the server's first bytes; a server slower
// than this is left to the transport's own timeouts.
const hintWait = 5 * time.Second

type hintConn struct {
	net.Conn
	network, addr string

	// The transport writes the preface before it starts reading, so the
	// first Write and every Read never overlap.
	wrote   bool
	err     error  // the server speaks HTTPS
	early   []byte // what the server sent first
	readErr error  // and the error after it
}

func (c *hintConn) Write(p []byte) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	n, err := c.Conn.Write(p)
	if c.wrote {
		return n, err
	}
	c.wrote = true
	buf := make([]byte, 512)
	_ = c.Conn.SetReadDeadline(time.Now().Add(hintWait))
	m, rerr := c.Conn.Read(buf)
	_ = c.Conn.SetReadDeadline(time.Time{})
	switch {
	case m > 0 && (bytes.HasPrefix(buf[:m], []byte("HTTP/")) || buf[0] == 0x15): // 0x15: a TLS alert
		c.err = c.speaksHTTPS()
	case m == 0 && rerr != nil && !isTimeout(rerr) && probeTLS(c.network, c.addr):
		c.err = c.speaksHTTPS()
	case m > 0:
		c.early = buf[:m]
	case rerr != nil && !isTimeout(rerr):
		c.readErr = rerr
	}
	if c.err != nil {
		return n, c.err
	}
	return n, err
}

func (c *hintConn) Read(p []byte) (int, error) {
	switch {
	case c.err != nil:
		return 0, c.err
	case len(c.early) > 0:
		n := copy(p, c.early)
		c.early = c.early[n:]
		return n, nil
	case c.readErr != nil:
		return 0, c.readErr
	}
	return c.Conn.Read(p)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func (c *hintConn) speaksHTTPS() error {
	return fmt.Errorf("rpcclient: %s: %w: use https://%s (with the pin from the join line)", c.addr, ErrSpeaksHTTPS, c.addr)
}

// probeTLS reports whether addr completes a TLS handshake. The certificate
// is not checked: nothing is sent over the connection.
func probeTLS(network, addr string) bool {
	d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: 2 * time.Second},
		Config: &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12}} //nolint:gosec // a probe, no data
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	c, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return false
	}
	_ = c.Close()
	return true
}
