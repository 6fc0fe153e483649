// Package server is the HTTP server every role serves its Connect handlers
// on: one mux, HTTP/2 over TLS (h2c only when the operator asked for an
// insecure lab server), GET /healthz, explicit timeouts, bounds on
// connections (ConnLimiter) and request sizes, and graceful shutdown. It
// knows nothing about any one service. Only roles/, internal/cliutil,
// internal/control, internal/daemon and internal/signal import it.
package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"go.uber.org/zap"
)

// Timeouts of every meshd HTTP server. There is no write timeout: Sync and
// signal streams live for hours; idle and header timeouts bound the rest.
const (
	ReadHeaderTimeout = 10 * time.Second
	IdleTimeout       = 120 * time.Second
	ShutdownTimeout   = 5 * time.Second
)

// Server serves handlers on one mux.
type Server struct {
	mux *http.ServeMux
	log *zap.Logger
	tls *tls.Config
	srv *http.Server

	// Limits of the listeners LimitConns and Listen make; set before them.
	ConnLimits ConnLimits
	mu         sync.Mutex
	limiters   []*ConnLimiter
}

// New returns a server. With tlsConfig nil it speaks HTTP/2 without TLS
// (h2c) and HTTP/1.1; callers allow that only behind an explicit --insecure.
func New(log *zap.Logger, tlsConfig *tls.Config) *Server {
	s := &Server{mux: http.NewServeMux(), log: log, tls: tlsConfig, ConnLimits: DefaultConnLimits()}
	s.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = w.Write([]byte("ok\n"))
	})
	protocols := new(http.Protocols)
	protocols.SetHTTP1(true)
	protocols.SetHTTP2(true)
	protocols.SetUnencryptedHTTP2(tlsConfig == nil)
	s.srv = &http.Server{
		Handler:           s.mux,
		ReadHeaderTimeout: ReadHeaderTimeout,
		IdleTimeout:       IdleTimeout,
		Protocols:         protocols,
		ErrorLog:          zap.NewStdLog(log.Named("http")),
		ConnState:         s.connState,
	}
	return s
}

// LimitConns wraps ln, a raw TCP listener, in a ConnLimiter with the
// server's ConnLimits that learns from the server which connections are
// established and busy. Serve the result, or a TLS listener over it
// (relay.SplitTLS: hand the TURN side to the limiter's Established).
func (s *Server) LimitConns(ln net.Listener) *ConnLimiter {
	l := NewConnLimiter(ln, s.ConnLimits, s.log.Named("connlimit"))
	s.mu.Lock()
	s.limiters = append(s.limiters, l)
	s.mu.Unlock()
	return l
}

func (s *Server) connState(c net.Conn, st http.ConnState) {
	s.mu.Lock()
	ls := s.limiters
	s.mu.Unlock()
	for _, l := range ls {
		l.ConnState(c, st)
	}
}

// Handle mounts h at pattern, as Connect's generated constructors return
// them. Request bodies other than streaming RPCs' are capped at
// MaxRequestBody; handlers bound each message with ReadLimit.
func (s *Server) Handle(pattern string, h http.Handler) { s.mux.Handle(pattern, limitBody(h)) }

// Listen opens a TCP listener on addr under the server's ConnLimits; with
// TLS configured, it terminates TLS (offering h2 and http/1.1 by ALPN).
func (s *Server) Listen(addr string) (net.Listener, error) {
	raw, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", addr, err)
	}
	var ln net.Listener = s.LimitConns(raw)
	if s.tls == nil {
		return ln, nil
	}
	return tls.NewListener(RefusePlainHTTP(ln), s.TLSConfig()), nil
}

// TLSConfig returns the server's TLS configuration with the ALPN protocols
// HTTP needs, or nil for h2c.
func (s *Server) TLSConfig() *tls.Config {
	if s.tls == nil {
		return nil
	}
	c := s.tls.Clone()
	c.NextProtos = appendMissing(c.NextProtos, "h2", "http/1.1")
	return c
}

func appendMissing(list []string, protos ...string) []string {
	for _, p := range protos {
		found := false
		for _, q := range list {
			found = found || q == p
		}
		if !found {
			list = append(list, p)
		}
	}
	return list
}

// Serve serves on ln until ctx ends, then shuts down gracefully: it stops
// accepting, cancels stream contexts and waits up to ShutdownTimeout. ln
// yields plain connections (h2c) or *tls.Conn (from Listen, or from a
// listener that already terminated TLS).
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	baseCtx, cancelStreams := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelStreams()
	s.srv.BaseContext = func(net.Listener) context.Context { return baseCtx }
	errc := make(chan error, 1)
	go func() { errc <- s.srv.Serve(ln) }()
	s.log.Info("serving", zap.Stringer("addr", ln.Addr()), zap.Bool("tls", s.tls != nil))
	select {
	case err := <-errc:
		return fmt.Errorf("serve %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	// Long-lived streams never go idle on their own: end them first.
	cancelStreams()
	sctx, cancel := context.WithTimeout(context.Background(), ShutdownTimeout)
	defer cancel()
	err := s.srv.Shutdown(sctx)
	if errors.Is(err, context.DeadlineExceeded) {
		err = s.srv.Close()
	}
	if e := <-errc; !errors.Is(e, http.ErrServerClosed) && err == nil {
		err = e
	}
	return err
}
