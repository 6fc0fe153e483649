package agent

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"go.uber.org/zap/zaptest"
	xproxy "golang.org/x/net/proxy"

	adminv1 "meshd/api/admin/v1"
	"meshd/internal/proxy"
	"meshd/internal/testutil"
)

// passAll lets every packet through: the agent that uses it leaves the
// judging to its peer's filter.
type passAll struct{}

func (passAll) Allow([]byte, bool) bool { return true }

// serveOn runs serve on a loopback listener until the test ends.
func serveOn(tb testing.TB, serve func(context.Context, net.Listener) error) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); serve(ctx, ln) }()
	tb.Cleanup(func() { cancel(); <-done })
	return ln.Addr().String()
}

// fetch GETs u with c and returns the status and body ("" and the error
// text when the request failed).
func fetch(c *http.Client, u string) (int, string) {
	resp, err := c.Get(u)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestProxiesReachAForwardedService: a program on A's machine fetches a
// page from a service on B's machine: through A's SOCKS5 and HTTP proxies
// (netstack mode, by mesh name and bare name) to B's --forward. A
// destination outside the mesh is refused; once the policy narrows to TCP
// 7000, B's packet filter keeps the forward on 8080 closed even to a peer
// whose own filter lets everything out, while the one on 7000 still works.
func TestProxiesReachAForwardedService(t *testing.T) {
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "served on b "+r.URL.Path)
	}))
	defer web.Close()
	local := web.Listener.Addr().String()

	w := newWorld(t)
	a := w.agentWith("pxa", func(o *Options) { o.Device.Filter = passAll{} })
	b := w.agentWith("pxb", func(o *Options) {
		o.Forwards = []proxy.Forward{{Port: 8080, Local: local}, {Port: 7000, Local: local}}
	})
	da, _ := waitUp(t, a)
	_, ipb := waitUp(t, b)
	waitPing(t, da, ipb, 15*time.Second)
	bName := b.Status().Self.DnsName
	if bName == "" || !strings.HasPrefix(bName, "pxb.") {
		t.Fatalf("b's mesh name %q", bName)
	}

	log := zaptest.NewLogger(t)
	socksAddr := serveOn(t, (&proxy.SOCKS5{Mesh: a.Mesh(), Log: log.Named("socks5")}).Serve)
	httpAddr := serveOn(t, (&proxy.HTTP{Mesh: a.Mesh(), Log: log.Named("http")}).Serve)
	d, err := xproxy.SOCKS5("tcp", socksAddr, nil, xproxy.Direct)
	if err != nil {
		t.Fatal(err)
	}
	socksTr := &http.Transport{Dial: d.Dial, DisableKeepAlives: true}
	viaSOCKS := &http.Client{Transport: socksTr, Timeout: 5 * time.Second}
	pu, _ := url.Parse("http://" + httpAddr)
	httpTr := &http.Transport{Proxy: http.ProxyURL(pu), DisableKeepAlives: true}
	viaHTTP := &http.Client{Transport: httpTr, Timeout: 5 * time.Second}

	for _, c := range []struct {
		client *http.Client
		url    string
	}{
		{viaSOCKS, "http://" + bName + ":8080/socks"},
		{viaSOCKS, "http://pxb:7000/bare"},
		{viaSOCKS, "http://" + ipb.String() + ":8080/ip"},
		{viaHTTP, "http://" + bName + ":8080/http"},
		{viaHTTP, "http://pxb:7000/http-bare"},
	} {
		var code int
		var body string
		testutil.WaitFor(t, 10*time.Second, "GET "+c.url, func() bool {
			code, body = fetch(c.client, c.url)
			return code == 200
		})
		if want := "served on b " + c.url[strings.LastIndex(c.url, "/"):]; body != want {
			t.Errorf("GET %s: %q, want %q", c.url, body, want)
		}
	}

	// UDP through the SOCKS5 proxy to an echo on B's netstack.
	udpEchoOn(t, b, 5000)
	if got := socksUDP(t, socksAddr, "pxb", 5000, "ping"); got != "ping" {
		t.Errorf("UDP through SOCKS5: %q, want the echo", got)
	}

	// No open proxy.
	if _, err := d.Dial("tcp", "127.0.0.1:"+strings.Split(local, ":")[1]); err == nil || !strings.Contains(err.Error(), "not allowed") {
		t.Errorf("SOCKS5 to this machine's loopback: %v, want refused (not allowed by ruleset)", err)
	}
	if code, body := fetch(viaHTTP, "http://"+local+"/"); code != http.StatusForbidden {
		t.Errorf("HTTP proxy to this machine's loopback: %d %q, want 403", code, body)
	}

	// The policy narrows to TCP 7000.
	ctx := context.Background()
	pols, err := w.control.Admin.ListPolicies(ctx, connect.NewRequest(&adminv1.ListPoliciesRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	tcp := "tcp"
	if _, err := w.control.Admin.UpdatePolicy(ctx, connect.NewRequest(&adminv1.UpdatePolicyRequest{
		Id: pols.Msg.Policies[0].Id, Protocol: &tcp, Ports: &adminv1.StringList{Values: []string{"7000"}},
	})); err != nil {
		t.Fatal(err)
	}
	// A's proxy refuses new connections to 8080 at once once the map
	// arrives (the HTTP proxy's open upstream connection, like any open
	// flow, stays)...
	var last error
	testutil.WaitFor(t, 20*time.Second, "8080 refused by A's proxy", func() bool {
		c, err := d.Dial("tcp", "pxb:8080")
		if err == nil {
			c.Close()
		}
		last = err
		return err != nil && strings.Contains(err.Error(), "not allowed")
	})
	t.Logf("A's proxy: %v", last)
	// ...and B's filter drops it even from a peer that sends it anyway.
	if echoes(da, ipb, 8080, time.Second) {
		t.Error("B's forward on 8080 answered although the policy allows TCP 7000 only")
	}
	if code, body := fetch(viaSOCKS, "http://pxb:7000/still"); code != 200 || body != "served on b /still" {
		t.Errorf("forward on 7000 under the narrowed policy: %d %q", code, body)
	}
	socksTr.CloseIdleConnections()
	httpTr.CloseIdleConnections()
}

// TestMeshRefusesWhileDown: with no tunnel the proxies answer "network
// unreachable" rather than hang.
func TestMeshRefusesWhileDown(t *testing.T) {
	w := newWorld(t)
	a := w.agent("pxdown")
	waitUp(t, a)
	if err := a.Down(context.Background()); err != nil {
		t.Fatal(err)
	}
	_, err := a.Mesh().Dial(context.Background(), "100.64.0.9", 80)
	if err == nil || !strings.Contains(err.Error(), "not up") {
		t.Fatalf("dial while down: %v, want ErrDown", err)
	}
}

// udpEchoOn echoes UDP datagrams on port of e's netstack until the test ends.
func udpEchoOn(tb testing.TB, e *Engine, port uint16) {
	tb.Helper()
	pc, err := e.Device().Net().ListenUDP(&net.UDPAddr{Port: int(port)})
	if err != nil {
		tb.Fatal(err)
	}
	done := make(chan struct{})
	tb.Cleanup(func() { pc.Close(); <-done })
	go func() {
		defer close(done)
		buf := make([]byte, 2048)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(buf[:n], from)
		}
	}()
}

// socksUDP sends data to host:port through a SOCKS5 UDP association,
// again every 200 ms until an answer comes (at most 10 s), and returns
// the answer's payload ("" for none).
func socksUDP(tb testing.TB, socks, host string, port uint16, data string) string {
	tb.Helper()
	c, err := net.Dial("tcp", socks)
	if err != nil {
		tb.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	c.Write([]byte{5, 1, 0, 5, 3, 0, 1, 0, 0, 0, 0, 0, 0})
	rep := make([]byte, 12)
	if _, err := io.ReadFull(c, rep); err != nil || rep[3] != 0 || rep[5] != 1 {
		tb.Fatalf("UDP ASSOCIATE: % x %v", rep, err)
	}
	relay := &net.UDPAddr{IP: net.IP(rep[6:10]), Port: int(rep[10])<<8 | int(rep[11])}
	uc, err := net.DialUDP("udp", nil, relay)
	if err != nil {
		tb.Fatal(err)
	}
	defer uc.Close()
	dg := append([]byte{0, 0, 0, 3, byte(len(host))}, host...)
	dg = append(append(dg, byte(port>>8), byte(port)), data...)
	buf := make([]byte, 2048)
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
		uc.Write(dg)
		uc.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		if n, err := uc.Read(buf); err == nil && n >= 10 {
			return string(buf[10:n]) // header: 0 0 0 1 ADDR(4) PORT(2)
		}
	}
	return ""
}
