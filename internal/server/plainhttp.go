package server

import (
	"errors"
	"io"
	"net"
	"time"
)

// RefusePlainHTTP wraps a listener whose connections are about to speak
// TLS. A client that sends plain HTTP there (an http:// URL, curl without
// the s) would otherwise see its connection closed without a word; it gets
// a 400 that says to use https://, as net/http answers when it does the
// handshake itself, and the connection then fails its handshake.
func RefusePlainHTTP(ln net.Listener) net.Listener { return &plainHTTPListener{ln} }

type plainHTTPListener struct{ net.Listener }

func (l *plainHTTPListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &plainHTTPConn{Conn: c}, nil
}

// PlainHTTPReply is what a plain HTTP client gets from a TLS port.
const PlainHTTPReply = "HTTP/1.0 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n" +
	"Client sent an HTTP request to an HTTPS server: this port speaks HTTPS; use https://\n"

var errPlainHTTP = errors.New("server: a plain HTTP request on a TLS port")

// plainHTTPConn checks the first byte a client sends. A TLS record starts
// with a content type below 0x20 (a handshake is 0x16), a STUN message
// (TURN on the shared port) with a byte below 0x40; an HTTP request, h2c's
// preface included, starts with an upper-case method.
type plainHTTPConn struct {
	net.Conn
	checked bool // the first Read is the TLS handshake's, on one goroutine
}

func (c *plainHTTPConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if c.checked || n == 0 {
		return n, err
	}
	c.checked = true
	if p[0] >= 'A' && p[0] <= 'Z' {
		_ = c.Conn.SetWriteDeadline(time.Now().Add(time.Second))
		_, _ = io.WriteString(c.Conn, PlainHTTPReply)
		return 0, errPlainHTTP
	}
	return n, err
}
