package dashboard

import (
	"bytes"
	"context"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"net/url"
	"strings"
	"time"

	"connectrpc.com/connect"
	"go.uber.org/zap"

	adminv1 "meshd/api/admin/v1"
	"meshd/api/admin/v1/adminv1connect"
)

//go:embed assets
var assets embed.FS

// Provider is another way to sign in, shown as a "Sign in with Name"
// button that posts the sign-in form (without the token) to URL, a
// handler of this site that ends in StartSession.
type Provider struct {
	Name string
	URL  string
}

// Options configure a Dashboard.
type Options struct {
	// Admin serves the admin API (control.Service.AdminHandler): every
	// page calls it with the session's token.
	Admin http.Handler
	Log   *zap.Logger
	// PlainHTTP: served without TLS (--insecure labs); cookies then lack
	// Secure, which browsers require over HTTPS only.
	PlainHTTP bool
	// Providers are extra sign-in buttons.
	Providers []Provider
	// SSO, when set, adds "Sign in with single sign-on": control's
	// browser login for admins and auditors.
	SSO WebLogin
	// IdleTimeout and MaxAge end sessions; zero: the defaults.
	IdleTimeout, MaxAge time.Duration
	// LiveInterval is how often the live peers table is refreshed (2 s).
	LiveInterval time.Duration
	// Now is the clock (tests); nil: time.Now.
	Now func() time.Time
}

// Dashboard is the web dashboard, an http.Handler.
type Dashboard struct {
	opts     Options
	log      *zap.Logger
	admin    adminv1connect.AdminServiceClient
	sessions *sessions
	pages    map[string]*template.Template
	mux      *http.ServeMux
	static   http.Handler
}

var _ http.Handler = (*Dashboard)(nil)

// New returns the dashboard.
func New(opts Options) (*Dashboard, error) {
	if opts.Admin == nil {
		return nil, errors.New("dashboard: no admin handler")
	}
	if opts.Log == nil {
		opts.Log = zap.NewNop()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.IdleTimeout <= 0 {
		opts.IdleTimeout = DefaultIdleTimeout
	}
	if opts.MaxAge <= 0 {
		opts.MaxAge = DefaultMaxAge
	}
	if opts.LiveInterval <= 0 {
		opts.LiveInterval = 2 * time.Second
	}
	d := &Dashboard{opts: opts, log: opts.Log, admin: newAdminClient(opts.Admin),
		sessions: &sessions{byID: map[string]*session{}, now: opts.Now, idle: opts.IdleTimeout, max: opts.MaxAge}}
	var err error
	if d.pages, err = parsePages(); err != nil {
		return nil, err
	}
	if opts.SSO != nil {
		d.opts.Providers = append(d.opts.Providers, Provider{Name: "single sign-on", URL: ssoStartPath})
	}
	static, _ := fs.Sub(assets, "assets/static")
	d.static = http.StripPrefix("/static/", http.FileServerFS(static))
	d.routes()
	return d, nil
}

func (d *Dashboard) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "same-origin")
	h.Set("X-Frame-Options", "DENY")
	d.mux.ServeHTTP(w, r)
}

// page is what every page template receives.
type page struct {
	Title   string
	Nav     string // which nav entry is current
	Actor   string
	CSRF    string
	Notice  string
	Error   string            // an error that belongs to no field
	Errors  map[string]string // field → error
	Form    url.Values        // what was typed, shown again after an error
	Data    any
	Path    string
	Provs   []Provider
	SignOut bool
}

func (p *page) fieldErr(field string) string { return p.Errors[field] }

// handler is a page handler of a signed-in session.
type handler func(w http.ResponseWriter, r *http.Request, s *session) error

func (d *Dashboard) routes() {
	m := http.NewServeMux()
	m.Handle("GET /static/", d.static)
	m.HandleFunc("GET /signin", d.signinPage)
	m.HandleFunc("POST /signin", d.signin)
	m.HandleFunc("POST /signout", d.signout)
	if d.opts.SSO != nil {
		m.HandleFunc("POST "+ssoStartPath, d.ssoStart)
		m.HandleFunc("GET "+ssoDonePath, d.ssoDone)
	}
	m.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, "/peers", http.StatusSeeOther) })
	get := func(pattern string, h handler) { m.Handle("GET "+pattern, d.authed(h, false)) }
	post := func(pattern string, h handler) { m.Handle("POST "+pattern, d.authed(h, true)) }
	get("/peers", d.peersPage)
	get("/live/peers", d.livePeers)
	get("/peers/{id}", d.peerPage)
	post("/peers/{id}", d.peerPost)
	get("/groups", d.groupsPage)
	post("/groups", d.groupsPost)
	get("/policies", d.policiesPage)
	post("/policies", d.policiesPost)
	get("/policies/{id}", d.policyPage)
	post("/policies/{id}", d.policyPost)
	get("/setup-keys", d.keysPage)
	post("/setup-keys", d.keysPost)
	get("/routes", d.routesPage)
	post("/routes", d.routesPost)
	get("/dns", d.dnsPage)
	post("/dns", d.dnsPost)
	get("/tokens", d.tokensPage)
	post("/tokens", d.tokensPost)
	get("/audit", d.auditPage)
	get("/status", d.statusPage)
	d.mux = m
}

// authed runs h for a signed-in session; a change (POST) must also carry
// the session's CSRF token. An expired session returns to sign-in, keeping
// a typed form to show again after it.
func (d *Dashboard) authed(h handler, change bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if change {
			r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
			if err := r.ParseForm(); err != nil {
				http.Error(w, "form too large or malformed", http.StatusBadRequest)
				return
			}
		}
		s := d.session(r)
		if s == nil {
			d.toSignin(w, r, change)
			return
		}
		if change && (!sameOrigin(r) || !csrfOK(s, r)) {
			http.Error(w, "refused: the form's CSRF token is missing or wrong; reload the page and try again", http.StatusForbidden)
			return
		}
		w.Header().Set("Cache-Control", "no-store")
		if err := h(w, r, s); err != nil {
			if connect.CodeOf(err) == connect.CodeUnauthenticated {
				// The token was revoked (or deleted) since sign-in.
				d.sessions.remove(s.id)
				d.toSignin(w, r, change)
				return
			}
			d.log.Warn("dashboard page", zap.String("path", r.URL.Path), zap.Error(err))
			d.render(w, r, s, http.StatusBadGateway, "error", &page{Title: "Error", Error: message(err)})
		}
	})
}

// toSignin sends a browser without a session to the sign-in page; the
// typed form of a POST is kept for after it.
func (d *Dashboard) toSignin(w http.ResponseWriter, r *http.Request, change bool) {
	if r.URL.Path == "/live/peers" {
		http.Error(w, "signed out", http.StatusUnauthorized)
		return
	}
	p := &page{Title: "Sign in", Provs: d.opts.Providers, Form: url.Values{"next": {r.URL.Path}},
		Notice: "Your session ended; sign in again."}
	if change {
		p.Data = keptFields(r.PostForm)
		p.Notice = "Your session ended; sign in again, and the form you filled in comes back."
	}
	d.render(w, r, nil, http.StatusUnauthorized, "signin", p)
}

// keptFields is a POSTed form without its CSRF token, to carry across
// sign-in in hidden fields.
func keptFields(v url.Values) []kv {
	var out []kv
	for k, vs := range v {
		if k == "csrf" || k == "token" {
			continue
		}
		for _, x := range vs {
			out = append(out, kv{k, x})
		}
	}
	return out
}

type kv struct{ K, V string }

func (d *Dashboard) signinPage(w http.ResponseWriter, r *http.Request) {
	if d.session(r) != nil {
		http.Redirect(w, r, "/peers", http.StatusSeeOther)
		return
	}
	d.render(w, r, nil, http.StatusOK, "signin", &page{Title: "Sign in", Provs: d.opts.Providers,
		Form: url.Values{"next": {r.URL.Query().Get("next")}}})
}

func (d *Dashboard) signin(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	if err := r.ParseForm(); err != nil || !sameOrigin(r) {
		http.Error(w, "bad sign-in form", http.StatusBadRequest)
		return
	}
	token := strings.TrimSpace(r.PostFormValue("token"))
	next := safeNext(r.PostFormValue("next"))
	fail := func(status int, msg string) {
		kept := url.Values{}
		for k, vs := range r.PostForm {
			if k, ok := strings.CutPrefix(k, "keep."); ok {
				kept[k] = vs
			}
		}
		d.render(w, r, nil, status, "signin", &page{Title: "Sign in", Provs: d.opts.Providers,
			Form: url.Values{"next": {next}}, Errors: map[string]string{"token": msg}, Data: keptFields(kept)})
	}
	if token == "" {
		fail(http.StatusBadRequest, "Enter an admin token (meshd admin tokens create NAME prints one; the first is in DATA/admin-token).")
		return
	}
	if old := d.session(r); old != nil {
		d.sessions.remove(old.id) // a new sign-in gets a new session id
	}
	s, err := d.startSession(r.Context(), w, token)
	if err != nil {
		if connect.CodeOf(err) == connect.CodeUnauthenticated {
			fail(http.StatusUnauthorized, "This admin token is not accepted: check it, or create one with meshd admin tokens create NAME.")
			return
		}
		fail(http.StatusBadGateway, "Sign-in failed: "+message(err))
		return
	}
	kept := url.Values{}
	for k, vs := range r.PostForm {
		if k, ok := strings.CutPrefix(k, "keep."); ok {
			kept[k] = vs
		}
	}
	if len(kept) > 0 {
		d.sessions.setDraft(s, next, kept)
	}
	http.Redirect(w, r, next, http.StatusSeeOther)
}

// StartSession checks credential with the admin API and, when it is
// accepted, opens a session for the browser of w. The token form calls it;
// a "Sign in with …" provider calls it once it holds a credential.
func (d *Dashboard) StartSession(ctx context.Context, w http.ResponseWriter, credential string) error {
	_, err := d.startSession(ctx, w, credential)
	return err
}

func (d *Dashboard) startSession(ctx context.Context, w http.ResponseWriter, credential string) (*session, error) {
	return d.startSessionAs(ctx, w, credential, "")
}

// startSessionAs is startSession naming the session's person actor ("":
// the admin token's name).
func (d *Dashboard) startSessionAs(ctx context.Context, w http.ResponseWriter, credential, actor string) (*session, error) {
	res, err := call(ctx, credential, d.admin.ListAdminTokens, &adminv1.ListAdminTokensRequest{})
	if err != nil {
		return nil, err
	}
	if actor == "" {
		actor = "admin"
		for _, t := range res.AdminTokens {
			if t.Current {
				actor = t.Name
			}
		}
	}
	s := d.sessions.create(credential, actor)
	d.setCookie(w, s.id, 0)
	return s, nil
}

// safeNext keeps a redirect target on this site: a path of printable
// ASCII without backslashes. Browsers drop tabs and newlines from a
// Location and read a backslash as a slash, so "/<tab>/evil.example"
// would leave.
func safeNext(next string) string {
	const home = "/peers"
	if !strings.HasPrefix(next, "/") || strings.HasPrefix(next, "//") {
		return home
	}
	for i := 0; i < len(next); i++ {
		if c := next[i]; c <= ' ' || c >= 0x7f || c == '\\' {
			return home
		}
	}
	if u, err := url.Parse(next); err != nil || u.Scheme != "" || u.Host != "" {
		return home
	}
	return next
}

func (d *Dashboard) signout(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	_ = r.ParseForm()
	if s := d.session(r); s != nil {
		if !sameOrigin(r) || !csrfOK(s, r) {
			http.Error(w, "refused: the form's CSRF token is missing or wrong; reload the page and try again", http.StatusForbidden)
			return
		}
		d.sessions.remove(s.id)
	}
	d.setCookie(w, "", -1)
	d.render(w, r, nil, http.StatusOK, "signin", &page{Title: "Sign in", Provs: d.opts.Providers,
		Notice: "Signed out.", Form: url.Values{}})
}

// render renders a page template; s is nil on the sign-in pages.
func (d *Dashboard) render(w http.ResponseWriter, r *http.Request, s *session, status int, name string, p *page) {
	if s != nil {
		p.Actor, p.CSRF, p.SignOut = s.actor, s.csrf, true
		if p.Form == nil {
			p.Form = d.sessions.takeDraft(s, r.URL.Path)
			if p.Form != nil && p.Notice == "" {
				p.Notice = "Here is what you typed before your session ended: check it and submit again."
			}
		}
	}
	if p.Form == nil {
		p.Form = url.Values{}
	}
	p.Path = r.URL.Path
	var buf bytes.Buffer
	if err := d.pages[name].ExecuteTemplate(&buf, "layout", p); err != nil {
		d.log.Error("render", zap.String("page", name), zap.Error(err))
		http.Error(w, "dashboard: render "+name+": "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

// message is an admin API error as the admin reads it.
func message(err error) string {
	var ce *connect.Error
	if errors.As(err, &ce) {
		return ce.Message()
	}
	return err.Error()
}

// formError renders page name again with err next to the field it is
// about (or above the form), keeping what was typed.
func (d *Dashboard) formError(w http.ResponseWriter, r *http.Request, s *session, name string, p *page, err error, fields ...field) error {
	if connect.CodeOf(err) == connect.CodeUnauthenticated {
		return err
	}
	msg := message(err)
	p.Form = r.PostForm
	p.Errors = map[string]string{}
	if f := fieldFor(msg, r.PostForm, fields); f != "" {
		p.Errors[f] = msg
	} else {
		p.Error = msg
	}
	d.render(w, r, s, http.StatusUnprocessableEntity, name, p)
	return nil
}

// field names a form field and the words the admin API's messages use for it.
type field struct {
	name  string
	words []string
}

func f(name string, words ...string) field { return field{name, words} }

// fieldFor picks the field an error message is about: the one whose word
// comes first in the message, once the values typed (which the message
// quotes, and which may hold any word) are taken out of it.
func fieldFor(msg string, typed url.Values, fields []field) string {
	for k, vs := range typed {
		if k == "csrf" || k == "action" || k == "id" {
			continue
		}
		for _, v := range vs {
			if v = strings.TrimSpace(v); v == "" {
				continue
			}
			msg = strings.ReplaceAll(msg, fmt.Sprintf("%q", v), "")
			if len(v) >= 4 {
				msg = strings.ReplaceAll(msg, v, "")
			}
		}
	}
	low := strings.ToLower(msg)
	best, at := "", len(low)+1
	for _, fl := range fields {
		for _, w := range fl.words {
			if i := strings.Index(low, w); i >= 0 && i < at {
				best, at = fl.name, i
			}
		}
	}
	return best
}

// redirect answers a successful change: back to the page, with a notice.
func redirect(w http.ResponseWriter, r *http.Request, to, notice string) error {
	if notice != "" {
		to += "?done=" + url.QueryEscape(notice)
	}
	http.Redirect(w, r, to, http.StatusSeeOther)
	return nil
}

// done is the notice of the change that led to this page.
func done(r *http.Request) string {
	n := r.URL.Query().Get("done")
	if len(n) > 200 {
		n = n[:200]
	}
	return n
}

func parsePages() (map[string]*template.Template, error) {
	base, err := template.New("base").Funcs(funcs).ParseFS(assets, "assets/layout.html", "assets/partials/*.html")
	if err != nil {
		return nil, fmt.Errorf("dashboard: templates: %w", err)
	}
	names, err := fs.Glob(assets, "assets/pages/*.html")
	if err != nil {
		return nil, err
	}
	pages := map[string]*template.Template{}
	for _, n := range names {
		t, err := template.Must(base.Clone()).ParseFS(assets, n)
		if err != nil {
			return nil, fmt.Errorf("dashboard: templates: %w", err)
		}
		pages[strings.TrimSuffix(strings.TrimPrefix(n, "assets/pages/"), ".html")] = t
	}
	return pages, nil
}
