package debugpprof

import (
	"context"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestUnixSocket serves on a unix socket, fetches the heap profile's text
// form through it, and stops with ctx.
func TestUnixSocket(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "pprof.sock")
	ln, err := Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- Serve(ctx, ln) }()

	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock)
	}}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Get("http://pprof/debug/pprof/heap?debug=1")
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "# HeapInuse") {
		t.Fatalf("heap profile: %v %d\n%.300s", err, resp.StatusCode, body)
	}
	tr.CloseIdleConnections()
	cancel()
	if err := <-served; err != nil {
		t.Fatalf("Serve after ctx ended: %v", err)
	}
}

// TestListenBad names the address in its error.
func TestListenBad(t *testing.T) {
	if _, err := Listen("256.0.0.1:1"); err == nil || !strings.Contains(err.Error(), "256.0.0.1:1") {
		t.Fatalf("Listen(bad) = %v", err)
	}
}
