package dashboard_test

import (
	"context"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"

	"meshd/internal/control/controltest"
	"meshd/internal/dashboard"
)

// env is control (the controltest harness, with agents) and a dashboard on
// its admin API, served over TLS.
type env struct {
	h     *controltest.Harness
	srv   *httptest.Server
	clock *clock
}

// clock is the dashboard's clock: real time plus what a test added.
type clock struct {
	mu   sync.Mutex
	skew time.Duration
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.skew)
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.skew += d
	c.mu.Unlock()
}

func newEnv(tb testing.TB, agents int) *env {
	tb.Helper()
	h := controltest.NewHarness(tb, agents, controltest.Quiet())
	e := &env{h: h, clock: &clock{}}
	_, admin := h.Service.AdminHandler()
	d, err := dashboard.New(dashboard.Options{Admin: admin, Log: zaptest.NewLogger(tb, zaptest.Level(zapcore.WarnLevel)),
		Now: e.clock.Now, LiveInterval: 100 * time.Millisecond})
	if err != nil {
		tb.Fatal(err)
	}
	e.srv = httptest.NewUnstartedServer(d)
	e.srv.EnableHTTP2 = true
	e.srv.StartTLS()
	tb.Cleanup(e.srv.Close)
	return e
}

// client is a browser-like HTTP client with a cookie jar that does not
// follow redirects (tests look at them).
func (e *env) client(tb testing.TB) *http.Client {
	tb.Helper()
	jar, _ := cookiejar.New(nil)
	c := e.srv.Client()
	c.Jar = jar
	c.Timeout = 10 * time.Second
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return c
}

type resp struct {
	status int
	body   string
	loc    string
}

func (e *env) get(tb testing.TB, c *http.Client, path string) resp {
	tb.Helper()
	r, err := c.Get(e.srv.URL + path)
	if err != nil {
		tb.Fatal(err)
	}
	return read(tb, r)
}

func (e *env) post(tb testing.TB, c *http.Client, path string, form url.Values, hdr ...string) resp {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "POST", e.srv.URL+path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	r, err := c.Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	return read(tb, r)
}

func read(tb testing.TB, r *http.Response) resp {
	tb.Helper()
	defer r.Body.Close()
	b, err := io.ReadAll(r.Body)
	if err != nil {
		tb.Fatal(err)
	}
	return resp{r.StatusCode, string(b), r.Header.Get("Location")}
}

var csrfRE = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// signIn signs c in with token and returns the session's CSRF token.
func (e *env) signIn(tb testing.TB, c *http.Client, token string) string {
	tb.Helper()
	r := e.post(tb, c, "/signin", url.Values{"token": {token}, "next": {"/peers"}})
	if r.status != http.StatusSeeOther || r.loc != "/peers" {
		tb.Fatalf("sign in: %d %s %.300s", r.status, r.loc, r.body)
	}
	return e.csrf(tb, c, "/peers")
}

func (e *env) csrf(tb testing.TB, c *http.Client, path string) string {
	tb.Helper()
	r := e.get(tb, c, path)
	m := csrfRE.FindStringSubmatch(r.body)
	if r.status != http.StatusOK || m == nil {
		tb.Fatalf("GET %s: %d, no CSRF token in %.300s", path, r.status, r.body)
	}
	return m[1]
}
