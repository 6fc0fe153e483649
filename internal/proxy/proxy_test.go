package proxy

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap/zaptest"
	xproxy "golang.org/x/net/proxy"

	controlv1 "meshd/api/control/v1"
	"meshd/internal/filter"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// testMap: self web-less client 100.64.0.1, peer "web" at 100.64.0.2 (which
// also routes 10.9.0.0/24), peer "db" at 100.64.0.3, domain mesh.test.
func testMap() *controlv1.NetworkMap {
	return &controlv1.NetworkMap{
		Self: &controlv1.SelfConfig{PublicKey: "self", OverlayIp: "100.64.0.1", DnsName: "me.mesh.test"},
		Peers: []*controlv1.RemotePeer{
			{PublicKey: "web", DnsName: "web.mesh.test", OverlayIp: "100.64.0.2"},
			{PublicKey: "db", DnsName: "db.mesh.test.", OverlayIp: "100.64.0.3"},
		},
		Routes: []*controlv1.Route{
			{Network: "10.9.0.0/24", PeerPublicKey: "web"},
			{Network: "10.8.0.0/24", PeerPublicKey: "self"},
			{Network: "10.7.0.0/24", PeerPublicKey: "gone"},
		},
		Dns: &controlv1.DNSConfig{Domain: "mesh.test."},
	}
}

func TestViewResolve(t *testing.T) {
	// Policy: web on any TCP port; db only on 5432; nothing else.
	rules, err := filter.Compile([]*controlv1.FirewallRule{
		{PeerIp: "100.64.0.2", Direction: controlv1.Direction_DIRECTION_OUT, Protocol: controlv1.Protocol_PROTOCOL_ALL},
		{PeerIp: "10.9.0.0/24", Direction: controlv1.Direction_DIRECTION_OUT, Protocol: controlv1.Protocol_PROTOCOL_TCP},
		{PeerIp: "100.64.0.3", Direction: controlv1.Direction_DIRECTION_OUT, Protocol: controlv1.Protocol_PROTOCOL_TCP,
			Ports: []*controlv1.PortRange{{Start: 5432, End: 5432}}},
		{PeerIp: "100.64.0.3", Direction: controlv1.Direction_DIRECTION_IN, Protocol: controlv1.Protocol_PROTOCOL_ALL},
	})
	if err != nil {
		t.Fatal(err)
	}
	v := NewView(testMap(), rules)
	for _, tc := range []struct {
		host string
		port uint16
		want string // address, or the error it wraps
	}{
		{"web.mesh.test", 80, "100.64.0.2"},
		{"WEB.Mesh.Test.", 80, "100.64.0.2"},
		{"web", 80, "100.64.0.2"},
		{"100.64.0.2", 80, "100.64.0.2"},
		{"::ffff:100.64.0.2", 80, "100.64.0.2"},
		{"db", 5432, "100.64.0.3"},
		{"db", 22, "not allowed"},          // the policy allows 5432 only
		{"me", 8080, "100.64.0.1"},         // own forwards
		{"10.9.0.7", 443, "10.9.0.7"},      // a route through web
		{"10.8.0.7", 443, "not allowed"},   // served here: netstack cannot route
		{"10.7.0.7", 443, "not allowed"},   // through a peer not in the map
		{"8.8.8.8", 53, "not allowed"},     // the internet: no open proxy
		{"100.64.0.99", 80, "not allowed"}, // an overlay address of no peer in the map
		{"example.com", 80, "no such name"},
		{"web.other", 80, "no such name"},
		{strings.Repeat("a", 255), 80, "no such name"},
	} {
		a, err := v.Resolve(tc.host, tc.port)
		got := a.String()
		switch {
		case errors.Is(err, ErrNotAllowed):
			got = "not allowed"
		case errors.Is(err, ErrNoSuchName):
			got = "no such name"
		case err != nil:
			got = err.Error()
		}
		if got != tc.want {
			t.Errorf("Resolve(%.20q, %d) = %s (%v), want %s", tc.host, tc.port, got, err, tc.want)
		}
	}
	if _, err := (*View)(nil).Resolve("web", 80); !errors.Is(err, ErrDown) {
		t.Errorf("no map: %v, want ErrDown", err)
	}
	// Without firewall rules (nil: accept all) the map alone decides.
	if _, err := NewView(testMap(), nil).Resolve("db", 22); err != nil {
		t.Errorf("no rules: %v", err)
	}
}

// fakeMesh resolves through a View and dials the loopback service that
// stands for each mesh address.
type fakeMesh struct {
	view  *View
	at    map[netip.Addr]string // mesh address -> loopback host:port
	udpAt map[netip.Addr]string // the same for UDP
}

func (m *fakeMesh) DialUDP(ctx context.Context, host string, port uint16) (net.Conn, error) {
	a, err := m.view.ResolveUDP(host, port)
	if err != nil {
		return nil, err
	}
	var d net.Dialer
	return d.DialContext(ctx, "udp", m.udpAt[a])
}

func (m *fakeMesh) Dial(ctx context.Context, host string, port uint16) (net.Conn, error) {
	a, err := m.view.Resolve(host, port)
	if err != nil {
		return nil, err
	}
	var d net.Dialer
	return d.DialContext(ctx, "tcp", m.at[a])
}

// world is a fake mesh whose peer "web" (100.64.0.2) serves HTTP.
func world(tb testing.TB) *fakeMesh {
	tb.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello from web "+r.URL.Path)
	}))
	tb.Cleanup(srv.Close)
	return &fakeMesh{view: NewView(testMap(), nil), at: map[netip.Addr]string{
		netip.MustParseAddr("100.64.0.2"): srv.Listener.Addr().String(),
	}}
}

// listen starts serve on a loopback listener until the test ends.
func listen(tb testing.TB, serve func(context.Context, net.Listener) error) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serve(ctx, ln) }()
	tb.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			tb.Errorf("serve: %v", err)
		}
	})
	return ln.Addr().String()
}

func socksServer(tb testing.TB, m Mesh, handshake time.Duration) string {
	s := &SOCKS5{Mesh: m, Log: zaptest.NewLogger(tb), Handshake: handshake}
	return listen(tb, s.Serve)
}

func get(tb testing.TB, c *http.Client, u string) (int, string) {
	tb.Helper()
	resp, err := c.Get(u)
	if err != nil {
		tb.Fatalf("GET %s: %v", u, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestSOCKS5Connect(t *testing.T) {
	addr := socksServer(t, world(t), 0)
	d, err := xproxy.SOCKS5("tcp", addr, nil, xproxy.Direct)
	if err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{Dial: d.Dial}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	for _, u := range []string{"http://web.mesh.test/a", "http://web/b", "http://100.64.0.2/c"} {
		code, body := get(t, c, u)
		if code != 200 || !strings.HasPrefix(body, "hello from web /") {
			t.Errorf("GET %s: %d %q", u, code, body)
		}
	}
	if _, err := d.Dial("tcp", "8.8.8.8:53"); err == nil || !strings.Contains(err.Error(), "not allowed") {
		t.Errorf("outside the mesh: %v, want a refusal (not allowed by ruleset)", err)
	}
}

// exchange sends raw bytes to a SOCKS5 server and returns what comes back
// until the server closes or 2 s pass.
func exchange(tb testing.TB, addr string, send []byte) []byte {
	tb.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		tb.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write(send); err != nil {
		tb.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	b, _ := io.ReadAll(c)
	return b
}

func TestSOCKS5BadInput(t *testing.T) {
	addr := socksServer(t, world(t), 0)
	hello := []byte{5, 1, 0}
	ok := []byte{5, 0}
	reply := func(rep byte) []byte { return append(ok, 5, rep, 0, 1, 0, 0, 0, 0, 0, 0) }
	name := func(n string, port byte) []byte {
		return append(append(append(hello, 5, 1, 0, 3, byte(len(n))), n...), 0, port)
	}
	for _, tc := range []struct {
		name       string
		send, want []byte
	}{
		{"socks4", []byte{4, 1, 0, 80, 8, 8, 8, 8, 0}, nil},
		{"no methods", []byte{5, 0}, nil},
		{"only username/password", []byte{5, 1, 2}, []byte{5, 0xff}},
		{"request version", append(hello, 4, 1, 0, 1, 100, 64, 0, 2, 0, 80), reply(repGeneralFailure)},
		{"bind", append(hello, 5, 2, 0, 1, 100, 64, 0, 2, 0, 80), reply(repCmdNotSupported)},
		{"address type", append(hello, 5, 1, 0, 9, 1, 2, 3, 4, 0, 80), reply(repAddrNotSupported)},
		{"empty name", name("", 80), reply(repHostUnreachable)},
		{"long name", name(strings.Repeat("x", 255), 80), reply(repHostUnreachable)},
		{"unknown name", name("example.com", 80), reply(repHostUnreachable)},
		{"outside the mesh", append(hello, 5, 1, 0, 1, 8, 8, 8, 8, 0, 53), reply(repNotAllowed)},
		{"outside the mesh, v6", append(append(hello, 5, 1, 0, 4), append(netip.MustParseAddr("2001:db8::1").AsSlice(), 0, 80)...),
			reply(repNotAllowed)},
		{"truncated name", append(hello, 5, 1, 0, 3, 200, 'a', 'b'), ok}, // then closed at the deadline or EOF
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := exchange(t, addr, tc.send)
			if string(got) != string(tc.want) {
				t.Errorf("got % x, want % x", got, tc.want)
			}
		})
	}
}

// TestSOCKS5Slowloris: a client that sends its greeting byte by byte too
// slowly is cut off at the handshake deadline.
func TestSOCKS5Slowloris(t *testing.T) {
	addr := socksServer(t, world(t), 300*time.Millisecond)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte{5})
	start := time.Now()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err = c.Read(make([]byte, 1))
	if err != io.EOF && !isReset(err) {
		t.Fatalf("read: %v, want the server to close", err)
	}
	if el := time.Since(start); el > 3*time.Second {
		t.Fatalf("closed after %v, want about the 300ms deadline", el)
	}
}

func isReset(err error) bool { return err != nil && strings.Contains(err.Error(), "reset") }

func httpServer(tb testing.TB, m Mesh, handshake time.Duration) string {
	h := &HTTP{Mesh: m, Log: zaptest.NewLogger(tb), Handshake: handshake}
	return listen(tb, h.Serve)
}

func TestHTTPProxy(t *testing.T) {
	addr := httpServer(t, world(t), 0)
	pu, _ := url.Parse("http://" + addr)
	tr := &http.Transport{Proxy: http.ProxyURL(pu)}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	code, body := get(t, c, "http://web.mesh.test/plain")
	if code != 200 || body != "hello from web /plain" {
		t.Errorf("plain GET: %d %q", code, body)
	}
	code, body = get(t, c, "http://8.8.8.8/")
	if code != http.StatusForbidden || !strings.Contains(body, "not in the mesh") || strings.Count(strings.TrimSpace(body), "\n") != 0 {
		t.Errorf("outside the mesh: %d %q, want 403 with a one-line reason", code, body)
	}
	code, _ = get(t, c, "http://nosuch.mesh.test/")
	if code != http.StatusNotFound {
		t.Errorf("unknown name: %d, want 404", code)
	}

	// CONNECT: a tunnel, then plain HTTP inside it.
	connect := func(target string) (*bufio.Reader, net.Conn, *http.Response) {
		cn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cn.Close() })
		cn.SetDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(cn, "CONNECT "+target+" HTTP/1.1\r\nHost: "+target+"\r\n\r\n")
		br := bufio.NewReader(cn)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		return br, cn, resp
	}
	br, cn, resp := connect("web:80")
	if resp.StatusCode != 200 {
		t.Fatalf("CONNECT web:80: %s", resp.Status)
	}
	io.WriteString(cn, "GET /tunnel HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n")
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	if string(b) != "hello from web /tunnel" {
		t.Errorf("through CONNECT: %q", b)
	}
	if _, _, resp := connect("8.8.8.8:443"); resp.StatusCode != http.StatusForbidden {
		t.Errorf("CONNECT outside the mesh: %s, want 403", resp.Status)
	}
	if _, _, resp := connect("web"); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("CONNECT without a port: %s, want 400", resp.Status)
	}
	// Not a proxy request.
	code, _ = get(t, http.DefaultClient, "http://"+addr+"/")
	if code != http.StatusBadRequest {
		t.Errorf("origin-form request: %d, want 400", code)
	}
}

// TestHTTPProxySlowloris: a header that trickles in is cut off.
func TestHTTPProxySlowloris(t *testing.T) {
	addr := httpServer(t, world(t), 300*time.Millisecond)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "CONNECT web:80 HTTP/1.1\r\n")
	start := time.Now()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	b, err := io.ReadAll(c)
	if err != nil && !isReset(err) {
		t.Fatalf("read: %v (%q), want the server to close", err, b)
	}
	if el := time.Since(start); el > 3*time.Second {
		t.Fatalf("closed after %v, want about the 300ms deadline", el)
	}
}

func TestParseListen(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		public   bool
	}{
		{"1080", "127.0.0.1:1080", false},
		{":1080", "127.0.0.1:1080", false},
		{"127.0.0.1:1080", "127.0.0.1:1080", false},
		{"[::1]:1080", "[::1]:1080", false},
		{"localhost:1080", "localhost:1080", false},
		{"0.0.0.0:1080", "0.0.0.0:1080", true},
		{"192.168.1.2:1080", "192.168.1.2:1080", true},
		{"nope", "error", false},
		{"host.example:1080", "error", false},
		{"127.0.0.1:http", "error", false},
	} {
		got, public, err := ParseListen(tc.in)
		if err != nil {
			got = "error"
		}
		if got != tc.want || public != tc.public {
			t.Errorf("ParseListen(%q) = %q %v (%v), want %q %v", tc.in, got, public, err, tc.want, tc.public)
		}
	}
}

func TestParseForward(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"8080=80", "8080=127.0.0.1:80"},
		{"8080=127.0.0.1:3000", "8080=127.0.0.1:3000"},
		{"22=[::1]:22", "22=[::1]:22"},
		{"8080", "error"},
		{"0=80", "error"},
		{"70000=80", "error"},
		{"8080=", "error"},
		{"8080=:80", "error"},
		{"8080=host:0", "error"},
	} {
		f, err := ParseForward(tc.in)
		got := f.String()
		if err != nil {
			got = "error"
		}
		if got != tc.want {
			t.Errorf("ParseForward(%q) = %q (%v), want %q", tc.in, got, err, tc.want)
		}
	}
}

func TestServeForward(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "local") }))
	defer srv.Close()
	addr := listen(t, func(ctx context.Context, ln net.Listener) error {
		return ServeForward(ctx, ln, srv.Listener.Addr().String(), zaptest.NewLogger(t))
	})
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	code, body := get(t, &http.Client{Transport: tr, Timeout: 10 * time.Second}, "http://"+addr+"/")
	if code != 200 || body != "local" {
		t.Errorf("through the forward: %d %q", code, body)
	}
}
