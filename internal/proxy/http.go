package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"strconv"
	"sync"
	"time"

	"go.uber.org/zap"
)

// HTTP is an HTTP proxy: CONNECT tunnels (for HTTPS and anything over TCP)
// and plain requests with an absolute URI (http://peer/...), forwarded
// through the mesh. It listens on loopback unless told otherwise.
type HTTP struct {
	Mesh Mesh
	Log  *zap.Logger
	// Handshake bounds the request header (0: HandshakeTimeout).
	Handshake time.Duration
}

// Serve serves the proxy on ln until ctx ends (it closes ln then), and
// returns once every connection it handled is closed.
func (h *HTTP) Serve(ctx context.Context, ln net.Listener) error {
	log := h.Log
	if log == nil {
		log = zap.NewNop()
	}
	hs := h.Handshake
	if hs == 0 {
		hs = HandshakeTimeout
	}
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
			host, port, err := splitPort(addr, 80)
			if err != nil {
				return nil, err
			}
			return dial(ctx, h.Mesh, host, port)
		},
		IdleConnTimeout:       30 * time.Second,
		ResponseHeaderTimeout: time.Minute,
	}
	defer tr.CloseIdleConnections()
	rp := &httputil.ReverseProxy{
		Rewrite:   func(pr *httputil.ProxyRequest) { pr.Out.URL = pr.In.URL },
		Transport: tr,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			refuse(w, log, r.Host, err)
		},
		ErrorLog: zap.NewStdLog(log.Named("http")),
	}
	p := &httpHandler{mesh: h.Mesh, log: log, rp: rp, ctx: ctx}
	srv := &http.Server{
		Handler:           p,
		ReadHeaderTimeout: hs,
		MaxHeaderBytes:    64 << 10,
		IdleTimeout:       time.Minute,
		ErrorLog:          zap.NewStdLog(log.Named("http")),
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("proxy: http on %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	srv.Close() // listener and connections, hijacked ones end with ctx
	<-errc
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.wg.Wait()
	return nil
}

type httpHandler struct {
	mesh Mesh
	log  *zap.Logger
	rp   *httputil.ReverseProxy
	ctx  context.Context

	mu     sync.Mutex
	closed bool // Serve returns: no new tunnels
	wg     sync.WaitGroup
}

func (p *httpHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodConnect {
		p.connect(w, r)
		return
	}
	if !r.URL.IsAbs() || r.URL.Scheme != "http" || r.URL.Host == "" {
		http.Error(w, "this is a proxy for the mesh: send CONNECT, or a request with an absolute http:// URI", http.StatusBadRequest)
		return
	}
	p.rp.ServeHTTP(w, r)
}

// connect answers CONNECT host:port with a tunnel through the mesh.
func (p *httpHandler) connect(w http.ResponseWriter, r *http.Request) {
	host, port, err := splitPort(r.Host, 0)
	if err != nil || port == 0 {
		http.Error(w, "CONNECT needs HOST:PORT", http.StatusBadRequest)
		return
	}
	up, err := dial(r.Context(), p.mesh, host, port)
	if err != nil {
		refuse(w, p.log, r.Host, err)
		return
	}
	hj, ok := w.(http.Hijacker)
	if !ok {
		up.Close()
		http.Error(w, "CONNECT over HTTP/2 is not supported", http.StatusHTTPVersionNotSupported)
		return
	}
	c, rw, err := hj.Hijack()
	if err != nil {
		up.Close()
		return
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		c.Close()
		up.Close()
		return
	}
	p.wg.Add(1)
	p.mu.Unlock()
	defer p.wg.Done()
	_ = c.SetDeadline(time.Time{})
	if _, err := c.Write([]byte("HTTP/1.1 200 Connection established\r\n\r\n")); err != nil {
		c.Close()
		up.Close()
		return
	}
	// Bytes the client sent after its header are in rw's buffer.
	if n := rw.Reader.Buffered(); n > 0 {
		b, _ := rw.Reader.Peek(n)
		if _, err := up.Write(b); err != nil {
			c.Close()
			up.Close()
			return
		}
	}
	pipe(p.ctx, c, up)
}

// refuse answers a request the mesh did not take, with a one-line reason.
func refuse(w http.ResponseWriter, log *zap.Logger, host string, err error) {
	code := http.StatusBadGateway
	switch {
	case errors.Is(err, ErrNotAllowed):
		code = http.StatusForbidden
	case errors.Is(err, ErrNoSuchName):
		code = http.StatusNotFound
	case errors.Is(err, ErrDown):
		code = http.StatusServiceUnavailable
	case errors.Is(err, context.DeadlineExceeded):
		code = http.StatusGatewayTimeout
	}
	log.Info("http proxy: refused", zap.String("to", clean(host)), zap.Int("status", code), zap.Error(err))
	http.Error(w, oneLine(err.Error()), code)
}

func oneLine(s string) string {
	for i := 0; i < len(s); i++ {
		if s[i] == '\n' || s[i] == '\r' {
			return s[:i]
		}
	}
	return s
}

// splitPort splits HOST:PORT (or HOST alone, with port def).
func splitPort(hostport string, def uint16) (string, uint16, error) {
	host, ps, err := net.SplitHostPort(hostport)
	if err != nil {
		if def == 0 {
			return "", 0, err
		}
		return hostport, def, nil
	}
	p, err := strconv.ParseUint(ps, 10, 16)
	if err != nil {
		return "", 0, fmt.Errorf("port %q: %w", ps, err)
	}
	return host, uint16(p), nil
}
