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
