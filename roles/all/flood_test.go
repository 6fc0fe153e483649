package all

import (
	"bufio"
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	adminv1 "meshd/api/admin/v1"
	"meshd/api/admin/v1/adminv1connect"
	"meshd/internal/rpcclient"
)

// TestAllPortSurvivesIdleConnectionFlood opens 2,000 TCP connections to the
// HTTPS port from one source (127.0.0.2) and leaves them silent; an honest
// client (127.0.0.1) must still get an admin call answered and a TURN over
// TLS handshake done within a few seconds.
func TestAllPortSurvivesIdleConnectionFlood(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	r, p := startFree(t, dir, false)
	listen := p.listen
	tok := r.waitJoin(t)
	adminToken, err := os.ReadFile(filepath.Join(dir, "admin-token"))
	if err != nil {
		t.Fatal(err)
	}

	const flood = 2000
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}, Timeout: 2 * time.Second}
	var conns []net.Conn
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	for range flood {
		c, err := d.Dial("tcp", listen)
		if err != nil {
			continue // the server may refuse some; holding the rest is the attack
		}
		conns = append(conns, c)
	}
	t.Logf("holding %d silent connections from 127.0.0.2", len(conns))

	start := time.Now()
	var lastErr error
	deadline := start.Add(30 * time.Second)
	// Retry as a client would (every 50 ms), so that the figure says how
	// long the port stays locked when it does.
	retry := time.NewTicker(50 * time.Millisecond)
	defer retry.Stop()
	for attempts := 0; time.Now().Before(deadline) && attempts < 600; attempts++ {
		if lastErr = adminCall(tok.ControlURL, tok.Pin, strings.TrimSpace(string(adminToken))); lastErr == nil {
			break
		}
		<-retry.C
	}
	took := time.Since(start)
	t.Logf("honest admin call answered after %v (last error: %v)", took, lastErr)
	if lastErr != nil || took > 3*time.Second {
		t.Fatalf("honest admin call under %d idle connections: took %v, error %v; want an answer within 3s", flood, took, lastErr)
	}

	// TURN over TLS shares the port: its handshake gets through too.
	cfg := mustClientConfig(t, tok.Pin)
	cfg.NextProtos = []string{"stun.turn"}
	td := &tls.Dialer{NetDialer: &net.Dialer{Timeout: 3 * time.Second}, Config: cfg}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	c, err := td.DialContext(ctx, "tcp", listen)
	if err != nil {
		t.Fatalf("TURN over TLS handshake under %d idle connections: %v", flood, err)
	}
	defer c.Close()
	if p := c.(*tls.Conn).ConnectionState().NegotiatedProtocol; p != "stun.turn" {
		t.Fatalf("negotiated %q, want stun.turn", p)
	}
}

// adminCall makes one GetServerStatus call on a new connection.
func adminCall(url, pin, token string) error {
	hc, err := rpcclient.New(url, pin)
	if err != nil {
		return err
	}
	defer hc.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req := connect.NewRequest(&adminv1.GetServerStatusRequest{})
	req.Header().Set("Authorization", "Bearer "+token)
	_, err = adminv1connect.NewAdminServiceClient(hc, url).GetServerStatus(ctx, req)
	return err
}

// TestAllPlainHTTPGetsHTTPSHint: plain HTTP on the shared HTTPS port (the
// TLS front, not net/http, does the handshake there) gets a 400 that says to
// use https://, not a closed connection.
func TestAllPlainHTTPGetsHTTPSHint(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	r, p := startFree(t, dir, false)
	listen := p.listen
	r.waitJoin(t)
	c, err := net.DialTimeout("tcp", listen, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("GET /healthz HTTP/1.1\r\nHost: " + listen + "\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("plain HTTP on the HTTPS port: %v; want a 400 saying to use https://", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), "use https://") {
		t.Fatalf("plain HTTP on the HTTPS port: %s %q", resp.Status, body)
	}
}
