// Package proxy lets programs on this machine use the mesh when the agent
// runs without root (wg netstack mode, where the overlay exists only inside
// the agent's process): a SOCKS5 and an HTTP proxy that reach peers by
// overlay address or mesh name, and forwards that expose local services on
// the agent's overlay address. Only internal/agent and roles/agent import
// it.
//
// The proxies are no open proxy: a destination must be a peer's overlay
// address (or in a route the map gives) that the map's firewall rules let
// this peer reach; names are resolved from the map only (View), never by
// the system resolver.
//
// Written here rather than taken from a SOCKS5 server library (such as
// things-go/go-socks5): CONNECT is about 200 lines, and the parts that
// matter here (handshake deadlines, bounded reads, refusal codes from the
// mesh's policy, map-only names) would be hooks around a library anyway;
// golang.org/x/net/proxy is a client only (the tests use it as one).
package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
)

// Errors a Mesh returns (wrapped); the proxies turn them into SOCKS5 reply
// codes and HTTP statuses.
var (
	// ErrNotAllowed: the destination is outside the mesh, or the policies
	// do not let this peer reach it.
	ErrNotAllowed = errors.New("proxy: destination not allowed: not a mesh peer (or route) this peer may reach")
	// ErrNoSuchName: the name is not a peer in the network map.
	ErrNoSuchName = errors.New("proxy: no such name in the mesh")
	// ErrDown: the tunnel is not up.
	ErrDown = errors.New("proxy: the mesh tunnel is not up")
)

// Mesh is what the proxies dial through.
type Mesh interface {
	// Dial opens a TCP connection to host:port through the mesh. host is
	// an IP address, a mesh name (name.domain) or a bare peer name. The
	// error wraps ErrNotAllowed, ErrNoSuchName or ErrDown when the
	// destination is refused before any packet is sent.
	Dial(ctx context.Context, host string, port uint16) (net.Conn, error)
	// DialUDP is Dial for UDP: a connected socket whose writes go to
	// host:port through the mesh and whose reads return what comes back.
	DialUDP(ctx context.Context, host string, port uint16) (net.Conn, error)
}

// Timeouts of a proxied connection.
const (
	// HandshakeTimeout bounds a client's whole request (greeting and
	// request, or the HTTP header): a client that trickles it in is cut off.
	HandshakeTimeout = 10 * time.Second
	// DialTimeout bounds the connection to the peer.
	DialTimeout = 15 * time.Second
)

// ParseListen reads a listen address: HOST:PORT, or PORT or :PORT alone,
// which mean 127.0.0.1:PORT (a proxy is for this machine unless said
// otherwise). public reports an address other programs on the network can
// reach: the caller warns, since anyone who reaches it uses the mesh as
// this peer.
func ParseListen(s string) (addr string, public bool, err error) {
	s = strings.TrimSpace(s)
	if p, err := strconv.ParseUint(strings.TrimPrefix(s, ":"), 10, 16); err == nil {
		return net.JoinHostPort("127.0.0.1", strconv.FormatUint(p, 10)), false, nil
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return "", false, fmt.Errorf("proxy: listen address %q: want HOST:PORT or PORT, e.g. 127.0.0.1:1080", s)
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return "", false, fmt.Errorf("proxy: listen address %q: port %q is not a number", s, port)
	}
	if host == "localhost" {
		return s, false, nil
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return "", false, fmt.Errorf("proxy: listen address %q: want an IP address or localhost as HOST", s)
	}
	return s, !a.IsLoopback(), nil
}

// serve accepts on ln until ctx ends and runs handle for each connection;
// it returns when ctx ended and every handler returned.
func serve(ctx context.Context, ln net.Listener, log *zap.Logger, handle func(context.Context, net.Conn)) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return fmt.Errorf("proxy: accept on %s: %w", ln.Addr(), err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			cctx, cancel := context.WithCancel(ctx)
			defer cancel()
			// The connection goes when the proxy stops.
			stopConn := context.AfterFunc(cctx, func() { c.Close() })
			defer stopConn()
			defer c.Close()
			handle(cctx, c)
		}()
	}
}

// halfCloseLinger is how long pipe waits for the other direction after one
// ended (a half-closed connection) before it closes both.
const halfCloseLinger = time.Minute

// pipe copies both ways until both directions ended (or one ended and the
// other did not follow within halfCloseLinger, or ctx ended), then closes
// both.
func pipe(ctx context.Context, a, b net.Conn) {
	done := make(chan struct{}, 2)
	cp := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		if cw, ok := dst.(interface{ CloseWrite() error }); ok {
			_ = cw.CloseWrite()
		} else {
			_ = dst.Close()
		}
		done <- struct{}{}
	}
	go cp(a, b)
	go cp(b, a)
	closeBoth := func() { a.Close(); b.Close() }
	select {
	case <-done:
		t := time.NewTimer(halfCloseLinger)
		select {
		case <-done:
		case <-t.C:
			closeBoth()
			<-done
		case <-ctx.Done():
			closeBoth()
			<-done
		}
		t.Stop()
	case <-ctx.Done():
		closeBoth()
		<-done
		<-done
	}
	closeBoth()
}

// dial dials through m with DialTimeout.
func dial(ctx context.Context, m Mesh, host string, port uint16) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, DialTimeout)
	defer cancel()
	return m.Dial(ctx, host, port)
}

// clean makes s safe to log: no control characters, at most 256 bytes.
func clean(s string) string {
	if len(s) > 256 {
		s = s[:256]
	}
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return '?'
		}
		return r
	}, s)
}
