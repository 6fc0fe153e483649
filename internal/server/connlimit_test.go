package server

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"meshd/internal/tlsconf"
)

// limitedServer serves s over TLS on 127.0.0.1 with lim, with a /stream
// handler that holds its response open until release closes.
type limitedServer struct {
	s       *Server
	lim     *ConnLimiter
	url     string
	pin     string
	release chan struct{}
}

func startLimited(t *testing.T, lim ConnLimits) *limitedServer {
	t.Helper()
	tc, err := tlsconf.ServerConfig(tlsconf.Options{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	s := New(zaptest.NewLogger(t), tc.Config)
	s.ConnLimits = lim
	ls := &limitedServer{s: s, pin: tc.Pin, release: make(chan struct{})}
	s.Handle("GET /stream", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "open\n")
		w.(http.Flusher).Flush()
		select {
		case <-ls.release:
			_, _ = io.WriteString(w, "done\n")
		case <-r.Context().Done():
		}
	}))
	ln, err := s.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ls.lim = s.limiters[0]
	ls.url = "https://" + ln.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return ls
}

// client returns an HTTP/2 client on its own connections from source ip.
func (ls *limitedServer) client(t *testing.T, ip net.IP) *http.Client {
	t.Helper()
	cfg, err := tlsconf.ClientConfig(ls.pin)
	if err != nil {
		t.Fatal(err)
	}
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: ip}, Timeout: 3 * time.Second}
	tr := &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: true, DialContext: d.DialContext}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 5 * time.Second}
}

func (ls *limitedServer) healthz(c *http.Client) error {
	resp, err := c.Get(ls.url + "/healthz")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, err = io.Copy(io.Discard, resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = errors.New(resp.Status)
	}
	return err
}

// openStream starts a /stream request and returns its body once "open"
// arrived.
func (ls *limitedServer) openStream(t *testing.T, c *http.Client) *bufio.Reader {
	t.Helper()
	c.Timeout = 0
	resp, err := c.Get(ls.url + "/stream")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	br := bufio.NewReader(resp.Body)
	if line, err := br.ReadString('\n'); line != "open\n" {
		t.Fatalf("stream: %q, %v", line, err)
	}
	return br
}

// flood opens n silent TCP connections from each source and holds them.
func flood(t *testing.T, addr string, n int, sources ...net.IP) int {
	t.Helper()
	held := 0
	for _, ip := range sources {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: ip}, Timeout: 2 * time.Second}
		for range n {
			c, err := d.Dial("tcp", addr)
			if err != nil {
				continue
			}
			held++
			t.Cleanup(func() { c.Close() })
		}
	}
	return held
}

func (l *ConnLimiter) count() (total, pending, idle int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.total, l.pending.Len(), l.idle.Len()
}

// TestConnLimitsUnderFlood: 2,000 silent connections from ten sources
// against a port with low limits. The server never holds more than Total,
// a long-lived stream opened before survives, and an honest client still
// gets an answer at once.
func TestConnLimitsUnderFlood(t *testing.T) {
	ls := startLimited(t, ConnLimits{PerSource: 100, Pending: 50, Total: 120, Establish: 5 * time.Second})
	stream := ls.openStream(t, ls.client(t, net.IPv4(127, 0, 0, 1)))
	var sources []net.IP
	for i := range 10 {
		sources = append(sources, net.IPv4(127, 0, 0, byte(10+i)))
	}
	held := flood(t, ls.lim.Addr().String(), 200, sources...)
	total, pending, _ := ls.lim.count()
	t.Logf("flood: %d connections dialed, server holds %d (%d pending), %d shed", held, total, pending, ls.lim.Shed())
	if total > 120 || pending > 50 {
		t.Fatalf("server holds %d connections (%d pending); limits are 120 (50)", total, pending)
	}

	start := time.Now()
	if err := ls.healthz(ls.client(t, net.IPv4(127, 0, 0, 1))); err != nil {
		t.Fatalf("honest client under flood: %v", err)
	}
	t.Logf("honest request answered in %v", time.Since(start))
	close(ls.release)
	if line, err := stream.ReadString('\n'); line != "done\n" {
		t.Fatalf("the stream opened before the flood: %q, %v", line, err)
	}
}

// TestConnLimitsShedIdleBeforeBusy: at Total, a new connection closes the
// longest idle one, never one with a stream in flight; with nothing idle
// left, it is refused.
func TestConnLimitsShedIdleBeforeBusy(t *testing.T) {
	ls := startLimited(t, ConnLimits{PerSource: 100, Pending: 100, Total: 3, Establish: 5 * time.Second})
	stream := ls.openStream(t, ls.client(t, net.IPv4(127, 0, 0, 1)))
	idle1, idle2 := ls.client(t, net.IPv4(127, 0, 0, 2)), ls.client(t, net.IPv4(127, 0, 0, 3))
	for _, c := range []*http.Client{idle1, idle2} {
		if err := ls.healthz(c); err != nil {
			t.Fatal(err)
		}
	}
	if total, _, idle := ls.lim.count(); total != 3 || idle != 2 {
		t.Fatalf("holds %d connections, %d idle; want 3, 2", total, idle)
	}
	if err := ls.healthz(ls.client(t, net.IPv4(127, 0, 0, 4))); err != nil {
		t.Fatalf("new client at the limit: %v", err)
	}
	if ls.lim.Shed() != 1 {
		t.Fatalf("shed %d connections, want 1 (the longest idle)", ls.lim.Shed())
	}
	close(ls.release)
	if line, err := stream.ReadString('\n'); line != "done\n" {
		t.Fatalf("the busy stream: %q, %v", line, err)
	}
}

// TestConnLimitsEstablishDeadline: a connection that says nothing is
// closed after Establish, and one source cannot hold more than PerSource.
func TestConnLimitsEstablishDeadline(t *testing.T) {
	ls := startLimited(t, ConnLimits{PerSource: 5, Pending: 100, Total: 100, Establish: 300 * time.Millisecond})
	c, err := net.DialTimeout("tcp", ls.lim.Addr().String(), 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	_ = c.SetReadDeadline(start.Add(3 * time.Second))
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, io.EOF) && !isReset(err) {
		t.Fatalf("silent connection: read %v; want it closed by the server", err)
	}

	flood(t, ls.lim.Addr().String(), 20, net.IPv4(127, 0, 0, 2))
	if total, _, _ := ls.lim.count(); total > 5 {
		t.Fatalf("one source holds %d connections; PerSource is 5", total)
	}
}

func isReset(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && !op.Timeout()
}

// TestConnLimitsBusyConnectionsDoNotCountPerSource: many clients behind one
// address (a NAT) with streams open are not limited by PerSource.
func TestConnLimitsBusyConnectionsDoNotCountPerSource(t *testing.T) {
	ls := startLimited(t, ConnLimits{PerSource: 2, Pending: 100, Total: 100, Establish: 5 * time.Second})
	var streams []*bufio.Reader
	for range 6 {
		streams = append(streams, ls.openStream(t, ls.client(t, net.IPv4(127, 0, 0, 1))))
	}
	if err := ls.healthz(ls.client(t, net.IPv4(127, 0, 0, 1))); err != nil {
		t.Fatalf("a seventh client from the same address: %v", err)
	}
	close(ls.release)
	for i, st := range streams {
		if line, err := st.ReadString('\n'); line != "done\n" {
			t.Fatalf("stream %d: %q, %v", i, line, err)
		}
	}
	if n := ls.lim.Shed(); n != 0 {
		t.Fatalf("shed %d connections of busy clients", n)
	}
}

func TestConnLimitsWithTotal(t *testing.T) {
	base := ConnLimits{PerSource: 256, Pending: 512, Total: 8192, Establish: time.Second}
	if got := base.WithTotal(0); got != base {
		t.Fatalf("WithTotal(0) = %+v, want the limits unchanged", got)
	}
	if got := base.WithTotal(100); got.Total != 100 || got.Pending != 50 {
		t.Fatalf("WithTotal(100) = %+v, want Total 100, Pending 50", got)
	}
	if got := base.WithTotal(50000); got.Total != 50000 || got.Pending != 512 {
		t.Fatalf("WithTotal(50000) = %+v, want Total 50000, Pending 512", got)
	}
}
