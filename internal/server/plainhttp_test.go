package server

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"meshd/internal/rpcclient"
	"meshd/internal/tlsconf"
)

// TestPlainHTTPOnTLSPort: plain HTTP/1 gets a 400 saying to use https://,
// also for a method net/http's own check misses (it looks for GET, HEAD,
// POST, PUT and OPTIONS only; DELETE here, like h2c's PRI, would meet a
// closed connection without RefusePlainHTTP), and meshd's own http://
// client (h2c) says the same instead of "unexpected EOF".
func TestPlainHTTPOnTLSPort(t *testing.T) {
	tc, err := tlsconf.ServerConfig(tlsconf.Options{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	s := New(zaptest.NewLogger(t), tc.Config)
	ln, err := s.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()
	defer func() { cancel(); <-done }()
	addr := ln.Addr().String()

	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("DELETE /healthz HTTP/1.1\r\nHost: " + addr + "\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("plain HTTP on the TLS port: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), "this port speaks HTTPS; use https://") {
		t.Fatalf("plain HTTP on the TLS port: %s %q", resp.Status, body)
	}

	hc, err := rpcclient.New("http://"+addr, "")
	if err != nil {
		t.Fatal(err)
	}
	defer hc.CloseIdleConnections()
	_, err = hc.Get("http://" + addr + "/healthz")
	if !errors.Is(err, rpcclient.ErrSpeaksHTTPS) || !strings.Contains(err.Error(), "use https://"+addr) {
		t.Fatalf("h2c client on the TLS port: %v; want it to say to use https://%s", err, addr)
	}
}
