package dashboard_test

import (
	"context"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	adminv1 "meshd/api/admin/v1"
	"meshd/internal/dashboard"
)

func groupNames(tb testing.TB, e *env) []string {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := e.h.Admin.ListGroups(ctx, connect.NewRequest(&adminv1.ListGroupsRequest{}))
	if err != nil {
		tb.Fatal(err)
	}
	var out []string
	for _, g := range res.Msg.Groups {
		out = append(out, g.Name)
	}
	return out
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// A wrong token is refused with an error next to the field and no session.
func TestSignInWrongToken(t *testing.T) {
	e := newEnv(t, 0)
	c := e.client(t)
	r := e.post(t, c, "/signin", url.Values{"token": {"mt_wrong"}})
	if r.status != http.StatusUnauthorized || !strings.Contains(r.body, `id="token-error"`) || !strings.Contains(r.body, "not accepted") {
		t.Fatalf("wrong token: %d %.400s", r.status, r.body)
	}
	if r := e.get(t, c, "/peers"); r.status != http.StatusUnauthorized || !strings.Contains(r.body, `name="token"`) {
		t.Fatalf("after a refused sign-in, /peers: %d", r.status)
	}
}

// The session cookie is HttpOnly, Secure, SameSite=Strict and __Host-.
func TestSessionCookie(t *testing.T) {
	e := newEnv(t, 0)
	c := e.client(t)
	req, _ := http.NewRequest("POST", e.srv.URL+"/signin", strings.NewReader(url.Values{"token": {e.h.Boot.AdminToken}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	res, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	ck := res.Header.Get("Set-Cookie")
	for _, want := range []string{"__Host-meshd_session=", "HttpOnly", "Secure", "SameSite=Strict", "Path=/"} {
		if !strings.Contains(ck, want) {
			t.Errorf("Set-Cookie %q lacks %s", ck, want)
		}
	}
	if strings.Contains(ck, e.h.Boot.AdminToken) {
		t.Error("the cookie carries the admin token")
	}
}

// A change without the session's CSRF token, with a wrong one, or from
// another origin is refused and changes nothing; with it, it goes through.
func TestCSRFRequired(t *testing.T) {
	e := newEnv(t, 0)
	c := e.client(t)
	token := e.signIn(t, c, e.h.Boot.AdminToken)
	form := url.Values{"action": {"create"}, "name": {"evil"}}
	if r := e.post(t, c, "/groups", form); r.status != http.StatusForbidden {
		t.Errorf("no CSRF token: %d, want 403", r.status)
	}
	form.Set("csrf", "x"+token)
	if r := e.post(t, c, "/groups", form); r.status != http.StatusForbidden {
		t.Errorf("wrong CSRF token: %d, want 403", r.status)
	}
	form.Set("csrf", token)
	if r := e.post(t, c, "/groups", form, "Origin", "https://evil.example"); r.status != http.StatusForbidden {
		t.Errorf("other origin: %d, want 403", r.status)
	}
	if contains(groupNames(t, e), "evil") {
		t.Fatal("a refused request created the group")
	}
	if r := e.post(t, c, "/groups", form); r.status != http.StatusSeeOther {
		t.Fatalf("with the CSRF token: %d %.300s", r.status, r.body)
	}
	if !contains(groupNames(t, e), "evil") {
		t.Fatal("the accepted request did not create the group")
	}
	// The header works as well as the field (for scripts).
	form.Del("csrf")
	form.Set("name", "evil2")
	if r := e.post(t, c, "/groups", form, "X-CSRF-Token", token); r.status != http.StatusSeeOther {
		t.Fatalf("CSRF header: %d", r.status)
	}
	// Sign-out needs it too.
	if r := e.post(t, c, "/signout", url.Values{}); r.status != http.StatusForbidden {
		t.Errorf("sign-out without CSRF token: %d", r.status)
	}
}

// The admin API's validation error is shown next to the field it is
// about, with what was typed kept.
func TestFieldErrors(t *testing.T) {
	e := newEnv(t, 0)
	c := e.client(t)
	token := e.signIn(t, c, e.h.Boot.AdminToken)
	r := e.post(t, c, "/policies", url.Values{"csrf": {token}, "action": {"create"}, "name": {"web"},
		"sources": {"All"}, "destinations": {"All"}, "protocol": {"tcp"}, "ports": {"99999"}})
	if r.status != http.StatusUnprocessableEntity {
		t.Fatalf("bad port: %d %.300s", r.status, r.body)
	}
	m := regexp.MustCompile(`(?s)id="pol-ports" name="ports" value="99999"[^>]*aria-invalid="true"[^>]*>\s*<p class="field-error" role="alert" id="ports-error">([^<]+)</p>`).FindStringSubmatch(r.body)
	if m == nil || !strings.Contains(m[1], "99999") {
		t.Fatalf("no error under the ports field: %.2000s", r.body)
	}
	r = e.post(t, c, "/groups", url.Values{"csrf": {token}, "action": {"create"}, "name": {"a,b"}})
	if r.status != http.StatusUnprocessableEntity || !regexp.MustCompile(`id="group-name" name="name" value="a,b"[^>]*>\s*<p class="field-error"[^>]*>[^<]*comma`).MatchString(r.body) {
		t.Fatalf("bad group name: %d %.1500s", r.status, r.body)
	}
}

// An idle session ends: the next page asks to sign in again, and a form
// submitted meanwhile comes back filled in after sign-in.
func TestSessionTimeoutKeepsForm(t *testing.T) {
	e := newEnv(t, 0)
	c := e.client(t)
	token := e.signIn(t, c, e.h.Boot.AdminToken)
	e.clock.Advance(dashboard.DefaultIdleTimeout + time.Second)
	r := e.post(t, c, "/groups", url.Values{"csrf": {token}, "action": {"create"}, "name": {"typed-before"}})
	if r.status != http.StatusUnauthorized || !strings.Contains(r.body, `name="keep.name" value="typed-before"`) {
		t.Fatalf("expired session: %d %.1000s", r.status, r.body)
	}
	if contains(groupNames(t, e), "typed-before") {
		t.Fatal("an expired session changed something")
	}
	r = e.post(t, c, "/signin", url.Values{"token": {e.h.Boot.AdminToken}, "next": {"/groups"},
		"keep.name": {"typed-before"}, "keep.action": {"create"}})
	if r.status != http.StatusSeeOther || r.loc != "/groups" {
		t.Fatalf("sign in again: %d %s", r.status, r.loc)
	}
	r = e.get(t, c, "/groups")
	if !strings.Contains(r.body, `id="group-name" name="name" value="typed-before"`) {
		t.Fatalf("the typed form did not come back: %.2000s", r.body)
	}
	if r := e.get(t, c, "/groups"); strings.Contains(r.body, `value="typed-before"`) {
		t.Error("the draft came back twice")
	}
}

// Sign-out ends the session on the server; a revoked token ends it too.
func TestSignOutAndRevokedToken(t *testing.T) {
	e := newEnv(t, 0)
	c := e.client(t)
	token := e.signIn(t, c, e.h.Boot.AdminToken)
	if r := e.post(t, c, "/signout", url.Values{"csrf": {token}}); r.status != http.StatusOK || !strings.Contains(r.body, "Signed out") {
		t.Fatalf("sign out: %d", r.status)
	}
	if r := e.get(t, c, "/peers"); r.status != http.StatusUnauthorized {
		t.Fatalf("after sign-out: %d", r.status)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tok, err := e.h.Admin.CreateAdminToken(ctx, connect.NewRequest(&adminv1.CreateAdminTokenRequest{Name: "alice"}))
	if err != nil {
		t.Fatal(err)
	}
	c2 := e.client(t)
	e.signIn(t, c2, tok.Msg.Token)
	if r := e.get(t, c2, "/tokens"); !strings.Contains(r.body, `alice <span class="tag">this session</span>`) {
		t.Fatalf("tokens page does not mark the session's token: %.1500s", r.body)
	}
	if _, err := e.h.Admin.DeleteAdminToken(ctx, connect.NewRequest(&adminv1.DeleteAdminTokenRequest{Id: "alice"})); err != nil {
		t.Fatal(err)
	}
	if r := e.get(t, c2, "/peers"); r.status != http.StatusUnauthorized {
		t.Fatalf("revoked token, /peers: %d, want the sign-in page", r.status)
	}
}

// The policy check answers on the page, from the admin API.
func TestPolicyCheckPage(t *testing.T) {
	e := newEnv(t, 2)
	c := e.client(t)
	token := e.signIn(t, c, e.h.Boot.AdminToken)
	a, b := e.h.Agents[0].Name, e.h.Agents[1].Name
	r := e.post(t, c, "/policies", url.Values{"csrf": {token}, "action": {"check"}, "source": {a}, "destination": {b},
		"check_protocol": {"tcp"}, "port": {"22"}})
	if r.status != http.StatusOK || !strings.Contains(r.body, `id="check-result"`) || !strings.Contains(r.body, "allowed by Default") {
		t.Fatalf("check: %d %.3000s", r.status, r.body)
	}
	r = e.post(t, c, "/policies", url.Values{"csrf": {token}, "action": {"check"}, "source": {a}, "destination": {b},
		"check_protocol": {"tcp"}, "port": {"70000"}})
	if r.status != http.StatusUnprocessableEntity || !regexp.MustCompile(`id="port"[^>]*>\s*<p class="field-error"`).MatchString(r.body) {
		t.Fatalf("bad port: %d %.3000s", r.status, r.body)
	}
}

// Every page renders for a signed-in admin.
func TestPagesRender(t *testing.T) {
	e := newEnv(t, 1)
	c := e.client(t)
	e.signIn(t, c, e.h.Boot.AdminToken)
	peer := e.h.Agents[0]
	for _, p := range []string{"/peers", "/peers/" + peer.Self.PeerId, "/groups", "/policies", "/setup-keys", "/routes", "/dns", "/tokens", "/audit?action=peer", "/status"} {
		r := e.get(t, c, p)
		if r.status != http.StatusOK || !strings.Contains(r.body, "</html>") {
			t.Errorf("GET %s: %d %.500s", p, r.status, r.body)
		}
	}
	if r := e.get(t, c, "/static/app.js"); r.status != http.StatusOK {
		t.Errorf("app.js: %d", r.status)
	}
	// The status page lists the replicas (this one at least) and the store.
	if r := e.get(t, c, "/status"); !strings.Contains(r.body, `id="replicas"`) || !strings.Contains(r.body, "(this one)") ||
		!strings.Contains(r.body, e.h.URL) || !strings.Contains(r.body, `id="store-state">available`) {
		t.Errorf("status page without the replicas or the store's state: %.3000s", r.body)
	}
}

// Signing in again gives a new session id and ends the old one.
func TestSignInAgainReplacesSession(t *testing.T) {
	e := newEnv(t, 0)
	c := e.client(t)
	e.signIn(t, c, e.h.Boot.AdminToken)
	u, _ := url.Parse(e.srv.URL)
	old := c.Jar.Cookies(u)
	if len(old) != 1 {
		t.Fatalf("cookies %v", old)
	}
	e.signIn(t, c, e.h.Boot.AdminToken)
	if now := c.Jar.Cookies(u); len(now) != 1 || now[0].Value == old[0].Value {
		t.Fatalf("session id kept across sign-ins: %v", now)
	}
	stale := e.client(t)
	stale.Jar.SetCookies(u, old)
	if r := e.get(t, stale, "/peers"); r.status != http.StatusUnauthorized {
		t.Fatalf("the replaced session still works: %d", r.status)
	}
}

// A policy's edit form changes it; an error keeps what was typed.
func TestPolicyEdit(t *testing.T) {
	e := newEnv(t, 0)
	c := e.client(t)
	token := e.signIn(t, c, e.h.Boot.AdminToken)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pols, err := e.h.Admin.ListPolicies(ctx, connect.NewRequest(&adminv1.ListPoliciesRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	id := pols.Msg.Policies[0].Id
	if r := e.get(t, c, "/policies/"+id); r.status != http.StatusOK || !strings.Contains(r.body, `action="/policies/`+id+`"`) {
		t.Fatalf("edit page: %d", r.status)
	}
	form := url.Values{"csrf": {token}, "name": {"web-only"}, "sources": {"All"}, "destinations": {"All"},
		"protocol": {"tcp"}, "ports": {"443, 8000-8100"}}
	if r := e.post(t, c, "/policies/"+id, form); r.status != http.StatusSeeOther {
		t.Fatalf("save: %d %.500s", r.status, r.body)
	}
	got, err := e.h.Admin.GetPolicy(ctx, connect.NewRequest(&adminv1.GetPolicyRequest{Id: id}))
	if err != nil {
		t.Fatal(err)
	}
	if p := got.Msg; p.Name != "web-only" || p.Enabled || p.Bidirectional || p.Protocol != "tcp" || strings.Join(p.Ports, ",") != "443,8000-8100" {
		t.Fatalf("after the edit: %v", p)
	}
	form.Set("ports", "1-2-3")
	form.Set("name", "typed-name")
	r := e.post(t, c, "/policies/"+id, form)
	if r.status != http.StatusUnprocessableEntity || !strings.Contains(r.body, `value="typed-name"`) || !strings.Contains(r.body, `id="ports-error"`) {
		t.Fatalf("bad edit: %d %.3000s", r.status, r.body)
	}
}

// A peer's page renames it, sets its groups and login expiry, deletes it.
func TestPeerPage(t *testing.T) {
	e := newEnv(t, 2)
	c := e.client(t)
	token := e.signIn(t, c, e.h.Boot.AdminToken)
	id := e.h.Agents[0].Self.PeerId
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := e.h.Admin.CreateGroup(ctx, connect.NewRequest(&adminv1.CreateGroupRequest{Name: "servers"})); err != nil {
		t.Fatal(err)
	}
	for _, f := range []url.Values{
		{"action": {"rename"}, "name": {"web1"}},
		{"action": {"groups"}, "groups": {"servers"}},
		{"action": {"expiry"}},
	} {
		f.Set("csrf", token)
		if r := e.post(t, c, "/peers/"+id, f); r.status != http.StatusSeeOther {
			t.Fatalf("%v: %d %.500s", f, r.status, r.body)
		}
	}
	p, err := e.h.Admin.GetPeer(ctx, connect.NewRequest(&adminv1.GetPeerRequest{Id: id}))
	if err != nil {
		t.Fatal(err)
	}
	if p.Msg.Name != "web1" || !contains(p.Msg.Groups, "servers") || p.Msg.LoginExpirationEnabled {
		t.Fatalf("peer after the changes: %v", p.Msg)
	}
	r := e.post(t, c, "/peers/"+id, url.Values{"csrf": {token}, "action": {"rename"}, "name": {e.h.Agents[1].Name}})
	if r.status != http.StatusUnprocessableEntity || !regexp.MustCompile(`id="name" name="name" value="`+e.h.Agents[1].Name+`"[^>]*>\s*<p class="field-error"`).MatchString(r.body) {
		t.Fatalf("taken name: %d %.3000s", r.status, r.body)
	}
	if r := e.post(t, c, "/peers/"+id, url.Values{"csrf": {token}, "action": {"delete"}}); r.status != http.StatusSeeOther || r.loc != "/peers?done=Peer+deleted." {
		t.Fatalf("delete: %d %s", r.status, r.loc)
	}
	if _, err := e.h.Admin.GetPeer(ctx, connect.NewRequest(&adminv1.GetPeerRequest{Id: id})); connect.CodeOf(err) != connect.CodeNotFound {
		t.Fatalf("deleted peer: %v", err)
	}
}
