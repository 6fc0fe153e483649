package server

import (
	"bufio"
	"context"
	"errors"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"meshd/internal/rpcclient"
	"meshd/internal/tlsconf"
)

// TestPlainHTTPOnTLSPort: curl-style HTTP/1 gets a 400 saying to use
// https://, and meshd's own http:// client (h2c) says the same instead of
// "unexpected EOF".
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
	if _, err := c.Write([]byte("GET /healthz HTTP/1.1\r\nHost: " + addr + "\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("plain HTTP on the TLS port: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("plain HTTP on the TLS port: %s", resp.Status)
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
