package dashboard

import (
	"context"
	"crypto/subtle"
	"html"
	"net/http"
	"net/url"
	"time"

	"connectrpc.com/connect"
	"go.uber.org/zap"
)

// WebLogin is control's single sign-on for a web page
// (control.Service's StartWebLogin and FinishWebLogin).
type WebLogin interface {
	StartWebLogin(ctx context.Context, returnTo, src string) (authURL, state string, err error)
	FinishWebLogin(ctx context.Context, state, code, perr string) (token, user string, err error)
}

// Paths of the single sign-on round trip.
const (
	ssoStartPath = "/sso/start"
	ssoDonePath  = "/sso/done"
)

// ssoCookieAge is how long the browser keeps a login's state: the
// provider's page may take a while.
const ssoCookieAge = 10 * time.Minute

func (d *Dashboard) ssoCookieName() string {
	if d.opts.PlainHTTP {
		return "meshd_sso"
	}
	return "__Host-meshd_sso"
}

// ssoStart sends the browser to the identity provider, keeping the login's
// state in a cookie of this browser only. It is a POST from the sign-in
// form, so another site cannot start logins in an admin's browser.
func (d *Dashboard) ssoStart(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	if err := r.ParseForm(); err != nil || !sameOrigin(r) {
		http.Error(w, "bad sign-in form", http.StatusBadRequest)
		return
	}
	scheme := "https"
	if d.opts.PlainHTTP {
		scheme = "http"
	}
	returnTo := (&url.URL{Scheme: scheme, Host: r.Host, Path: ssoDonePath}).String()
	authURL, state, err := d.opts.SSO.StartWebLogin(r.Context(), returnTo, r.RemoteAddr)
	if err != nil {
		d.log.Info("SSO sign-in not started", zap.Error(err))
		d.render(w, r, nil, http.StatusBadGateway, "signin", &page{Title: "Sign in", Provs: d.opts.Providers,
			Form: url.Values{"next": {safeNext(r.PostFormValue("next"))}}, Error: "Single sign-on failed: " + message(err)})
		return
	}
	// Lax, not Strict: the browser comes back from the provider's site.
	http.SetCookie(w, &http.Cookie{Name: d.ssoCookieName(), Value: state, Path: "/", MaxAge: int(ssoCookieAge / time.Second),
		HttpOnly: true, Secure: !d.opts.PlainHTTP, SameSite: http.SameSiteLaxMode})
	// Not a redirect: the sign-in page's CSP (form-action 'self') would
	// stop a form's redirect to the provider's site. A page of ours that
	// moves on is a navigation of its own.
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	u := html.EscapeString(authURL)
	_, _ = w.Write([]byte(`<!doctype html><meta http-equiv="refresh" content="0;url=` + u + `"><title>Sign in</title>` +
		`<p><a href="` + u + `">Continue to your identity provider</a></p>` + "\n"))
}

// ssoDone finishes a login that this browser started and opens its
// session.
func (d *Dashboard) ssoDone(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	c, err := r.Cookie(d.ssoCookieName())
	http.SetCookie(w, &http.Cookie{Name: d.ssoCookieName(), Value: "", Path: "/", MaxAge: -1,
		HttpOnly: true, Secure: !d.opts.PlainHTTP, SameSite: http.SameSiteLaxMode})
	fail := func(status int, msg string) {
		d.render(w, r, nil, status, "signin", &page{Title: "Sign in", Provs: d.opts.Providers, Form: url.Values{}, Error: msg})
	}
	state := q.Get("state")
	if err != nil || state == "" || subtle.ConstantTimeCompare([]byte(c.Value), []byte(state)) != 1 {
		// A login link that another browser started: finishing it here
		// would sign that browser's owner in as whoever is here.
		fail(http.StatusForbidden, "This sign-in was not started in this browser: sign in again from this page.")
		return
	}
	token, user, err := d.opts.SSO.FinishWebLogin(r.Context(), state, q.Get("code"), q.Get("error"))
	if err != nil {
		fail(http.StatusForbidden, "Single sign-on failed: "+message(err))
		return
	}
	if old := d.session(r); old != nil {
		d.sessions.remove(old.id)
	}
	if _, err := d.startSessionAs(r.Context(), w, token, user); err != nil {
		msg := "Sign-in failed: " + message(err)
		if connect.CodeOf(err) == connect.CodePermissionDenied {
			msg = "Your role does not include the dashboard (it needs owner, admin or auditor): " + message(err)
		}
		fail(http.StatusForbidden, msg)
		return
	}
	// The session cookie is SameSite=Strict, and this request came from
	// the provider's site: a redirect would go out without it. A page of
	// ours that moves on makes the next request same-site.
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write([]byte(`<!doctype html><meta http-equiv="refresh" content="0;url=/peers"><title>Signed in</title>` +
		`<p>Signed in as ` + html.EscapeString(user) + `. <a href="/peers">Continue to the dashboard</a></p>` + "\n"))
}
