package relay_test

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/pion/turn/v3"
	"go.uber.org/zap/zaptest"

	"meshd/internal/server"
	"meshd/nat/relay"
	"meshd/nat/relay/relaytest"
)

// sharedPort serves HTTPS (internal/server, as roles/all does) and TURN
// over TLS on one listener split by SplitTLS.
func sharedPort(t *testing.T) (addr string, s *relay.Server) {
	t.Helper()
	raw, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	log := zaptest.NewLogger(t)
	srv := server.New(log, serverTLS(t))
	httpLn, turnLn := relay.SplitTLS(raw, srv.TLSConfig())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, httpLn) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	s = startRelay(t, func(o *relay.Options) { o.TLSListener = turnLn })
	return raw.Addr().String(), s
}

func TestSplitTLSServesHTTP2AndTURN(t *testing.T) {
	addr, s := sharedPort(t)

	get := func(tr *http.Transport) *http.Response {
		t.Helper()
		defer tr.CloseIdleConnections()
		resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get("https://" + addr + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(body) != "ok\n" {
			t.Fatalf("body %q", body)
		}
		return resp
	}
	h2 := get(&http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, ForceAttemptHTTP2: true})
	if h2.ProtoMajor != 2 || h2.TLS == nil || h2.TLS.NegotiatedProtocol != "h2" {
		t.Fatalf("got %s (ALPN %q), want HTTP/2 over TLS", h2.Proto, h2.TLS.NegotiatedProtocol)
	}
	h1 := get(&http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, TLSNextProto: map[string]func(string, *tls.Conn) http.RoundTripper{}})
	if h1.ProtoMajor != 1 {
		t.Fatalf("got %s, want HTTP/1.1", h1.Proto)
	}

	// pion/ice's TURN client: no ALPN.
	pionStyle := &tls.Config{InsecureSkipVerify: true}
	a := mustAllocate(t, addr, relaytest.TLS, cred("a"), pionStyle)
	// coturn's: http/1.1 first, then stun.turn; the server picks stun.turn.
	coturnStyle := &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1", "stun.turn", "stun.nat-discovery"}}
	conn, err := tls.Dial("tcp4", addr, coturnStyle)
	if err != nil {
		t.Fatal(err)
	}
	if p := conn.ConnectionState().NegotiatedProtocol; p != relay.ALPNTURN {
		t.Fatalf("coturn-style client negotiated %q, want %q", p, relay.ALPNTURN)
	}
	b, err := relaytest.AllocateOn(t, turn.NewSTUNConn(conn), addr, cred("b"))
	if err != nil {
		t.Fatal(err)
	}
	if got := relaytest.Exchange(t, a, b, 50, 1280); got != 50*1280 {
		t.Fatalf("got %d bytes", got)
	}
	if st := s.Stats(); st.AllocationsByTransport["tls"] != 2 {
		t.Fatalf("allocations %v, want 2 over TLS", st.AllocationsByTransport)
	}
}

// TestSplitTLSSlowHandshake: a client that connects and says nothing
// must not hold up the next one's handshake.
func TestSplitTLSSlowHandshake(t *testing.T) {
	addr, _ := sharedPort(t)
	silent, err := net.Dial("tcp4", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()

	tr := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, ForceAttemptHTTP2: true}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: relay.HandshakeTimeout / 2}).Get("https://" + addr + "/healthz")
	if err != nil {
		t.Fatalf("request behind a silent client: %v", err)
	}
	resp.Body.Close()
	// The silent connection is still waiting for its handshake.
	_ = silent.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	var ne net.Error
	if _, err := silent.Read(make([]byte, 1)); !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("silent connection: %v, want it still open", err)
	}
}

// TestSplitTLSClose: the raw listener closes when both sides have.
func TestSplitTLSClose(t *testing.T) {
	raw, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	httpLn, turnLn := relay.SplitTLS(raw, serverTLS(t))
	if err := httpLn.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := httpLn.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("accept after close: %v", err)
	}
	// TURN still gets connections.
	dialed := make(chan struct{})
	go func() {
		defer close(dialed)
		c, err := tls.Dial("tcp4", raw.Addr().String(), &tls.Config{InsecureSkipVerify: true, NextProtos: []string{relay.ALPNTURN}})
		if err == nil {
			c.Close()
		}
	}()
	guard := time.AfterFunc(10*time.Second, func() { turnLn.Close() })
	defer guard.Stop()
	c, err := turnLn.Accept()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := c.(*tls.Conn); !ok {
		t.Fatalf("accepted %T, want *tls.Conn", c)
	}
	c.Close()
	<-dialed
	if err := turnLn.Close(); err != nil {
		t.Fatal(err)
	}
	if c, err := net.DialTimeout("tcp4", raw.Addr().String(), time.Second); err == nil {
		c.Close()
		t.Fatal("raw listener still accepts after both sides closed")
	}
}
