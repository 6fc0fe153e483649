package dashboard_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"html"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"

	adminv1 "meshd/api/admin/v1"
	"meshd/internal/control"
	"meshd/internal/control/controltest"
	"meshd/internal/dashboard"
	"meshd/internal/oidctest"
)

// ssoEnv is a dashboard of a control with single sign-on.
type ssoEnv struct {
	h   *controltest.Harness
	p   *oidctest.Provider
	srv *httptest.Server
}

func newSSOEnv(t *testing.T) *ssoEnv {
	t.Helper()
	e := &ssoEnv{}
	e.h = controltest.NewHarness(t, 1, controltest.Quiet(), controltest.WithOptions(func(o *control.Options) {
		e.p = oidctest.New(t, oidctest.Options{RedirectURIs: []string{o.PublicURL + "/sso/callback"}})
		o.OIDC = control.OIDCOptions{Issuer: e.p.Issuer, ClientID: "meshd"}
	}))
	for _, s := range []string{"ann", "eve", "max"} {
		e.p.AddPerson(oidctest.Person{Subject: s, Email: s + "@example.com"})
	}
	_, admin := e.h.Service.AdminHandler()
	d, err := dashboard.New(dashboard.Options{Admin: admin, SSO: e.h.Service,
		Log: zaptest.NewLogger(t, zaptest.Level(zapcore.WarnLevel))})
	if err != nil {
		t.Fatal(err)
	}
	e.srv = httptest.NewUnstartedServer(d)
	e.srv.StartTLS()
	t.Cleanup(e.srv.Close)
	return e
}

// browser is a client with its own cookies that follows redirects across
// the dashboard, control and the provider.
func (e *ssoEnv) browser(t *testing.T) *http.Client {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AddCert(e.srv.Certificate())
	pool.AddCert(e.h.Server.Certificate())
	jar, _ := cookiejar.New(nil)
	return &http.Client{Jar: jar, Timeout: 10 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
}

// start posts the sign-in form's SSO button and returns the provider's
// URL the page sends the browser on to.
func (e *ssoEnv) start(t *testing.T, c *http.Client) string {
	t.Helper()
	req, _ := http.NewRequest("POST", e.srv.URL+"/sso/start", strings.NewReader("next=%2Fpeers"))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", e.srv.URL)
	res, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	r := read(t, res)
	m := refreshRE.FindStringSubmatch(r.body)
	if r.status != http.StatusOK || m == nil || !strings.HasPrefix(html.UnescapeString(m[1]), e.p.Issuer) {
		t.Fatalf("SSO start: %d %.300s", r.status, r.body)
	}
	return html.UnescapeString(m[1])
}

var refreshRE = regexp.MustCompile(`http-equiv="refresh" content="0;url=([^"]+)"`)

func (e *ssoEnv) follow(t *testing.T, c *http.Client, u string) resp {
	t.Helper()
	res, err := c.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	return read(t, res)
}

// The sign-in page offers single sign-on once control has it; the person
// signs in at the provider and lands on the dashboard under their name.
// A login link started in one browser and opened in another (sent to an
// admin by someone who wants their session) signs nobody in, in either.
func TestSSOSignIn(t *testing.T) {
	e := newSSOEnv(t)
	ann := e.browser(t)
	if r := e.follow(t, ann, e.srv.URL+"/signin"); !strings.Contains(r.body, `formaction="/sso/start"`) {
		t.Fatalf("no SSO button on the sign-in page: %.500s", r.body)
	}
	e.p.BrowserLogin("ann") // the first to log in owns the account
	r := e.follow(t, ann, e.start(t, ann))
	if r.status != http.StatusOK || !strings.Contains(r.body, "Signed in as ann@example.com") {
		t.Fatalf("after the provider: %d %.500s", r.status, r.body)
	}
	if r := e.follow(t, ann, e.srv.URL+"/peers"); r.status != http.StatusOK || !strings.Contains(r.body, "agent-0") || !strings.Contains(r.body, "ann@example.com") {
		t.Fatalf("peers page after SSO sign-in: %d %.500s", r.status, r.body)
	}

	// Eve starts a login in her browser and sends its link to Ann, who
	// is signed in at the provider.
	eve := e.browser(t)
	link := e.start(t, eve)
	r = e.follow(t, e.browser(t), link) // Ann's other browser, without Eve's cookie
	if r.status != http.StatusForbidden || strings.Contains(r.body, "Signed in") {
		t.Fatalf("a login link from another browser: %d %.300s", r.status, r.body)
	}
	if r := e.follow(t, eve, e.srv.URL+"/peers"); strings.Contains(r.body, "agent-0") {
		t.Fatal("the browser that started the login got a session from someone else's sign-in")
	}

	// Eve herself (a user: she manages only her own peers) is told the
	// dashboard is not for her role.
	e.p.BrowserLogin("eve")
	r = e.follow(t, eve, e.start(t, eve))
	if r.status != http.StatusForbidden || !strings.Contains(r.body, "role") {
		t.Fatalf("a user-role sign-in: %d %.500s", r.status, r.body)
	}
}

// A person blocked while signed in to the dashboard is signed out at their
// next request, not left on an error page with a live session.
func TestSSOBlockedSignedOut(t *testing.T) {
	e := newSSOEnv(t)
	ann, max := e.browser(t), e.browser(t)
	e.p.BrowserLogin("ann")
	e.follow(t, ann, e.start(t, ann))
	e.p.BrowserLogin("max")
	e.follow(t, max, e.start(t, max)) // a user: refused; make max an admin
	ctx := context.Background()
	if _, err := e.h.Admin.UpdateUser(ctx, connect.NewRequest(&adminv1.UpdateUserRequest{Id: "max@example.com", Role: ptr("admin")})); err != nil {
		t.Fatal(err)
	}
	e.follow(t, max, e.start(t, max))
	if r := e.follow(t, max, e.srv.URL+"/peers"); r.status != http.StatusOK || !strings.Contains(r.body, "agent-0") {
		t.Fatalf("admin max on the peers page: %d %.300s", r.status, r.body)
	}
	if _, err := e.h.Admin.UpdateUser(ctx, connect.NewRequest(&adminv1.UpdateUserRequest{Id: "max@example.com", Blocked: ptr(true)})); err != nil {
		t.Fatal(err)
	}
	if r := e.follow(t, max, e.srv.URL+"/peers"); r.status != http.StatusUnauthorized || !strings.Contains(r.body, `name="token"`) {
		t.Fatalf("blocked max on the peers page: %d %.300s", r.status, r.body)
	}
	if r := e.follow(t, max, e.srv.URL+"/groups"); r.status != http.StatusUnauthorized {
		t.Fatalf("blocked max still has a session: %d", r.status)
	}
}

func ptr[T any](v T) *T { return &v }
