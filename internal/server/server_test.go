package server

import (
	"context"
	"io"
	"net/http"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"meshd/internal/rpcclient"
	"meshd/internal/tlsconf"
)

func TestHealthzOverPinnedTLSAndH2C(t *testing.T) {
	tc, err := tlsconf.ServerConfig(tlsconf.Options{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name   string
		tls    bool
		scheme string
		pin    string
	}{
		{"tls", true, "https", tc.Pin},
		{"h2c", false, "http", ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var cfg = tc.Config
			if !tt.tls {
				cfg = nil
			}
			s := New(zaptest.NewLogger(t), cfg)
			ln, err := s.Listen("127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- s.Serve(ctx, ln) }()

			c, err := rpcclient.New(tt.scheme+"://"+ln.Addr().String(), tt.pin)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := c.Get(tt.scheme + "://" + ln.Addr().String() + "/healthz")
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK || string(body) != "ok\n" || resp.ProtoMajor != 2 {
				t.Fatalf("healthz: %d %q over HTTP/%d", resp.StatusCode, body, resp.ProtoMajor)
			}
			c.CloseIdleConnections()
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("shutdown: %v", err)
				}
			case <-time.After(ShutdownTimeout + 2*time.Second):
				t.Fatal("server did not shut down")
			}
		})
	}
}
