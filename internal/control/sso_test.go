package control_test

import (
	"context"
	"errors"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	adminv1 "meshd/api/admin/v1"
	"meshd/internal/control"
	"meshd/internal/control/controltest"
	"meshd/internal/controlclient"
	"meshd/internal/oidctest"
)

var (
	ann = oidctest.Person{Subject: "ann", Email: "ann@example.com", Name: "Ann", Groups: []string{"eng"}}
	bob = oidctest.Person{Subject: "bob", Email: "bob@example.com", Name: "Bob"}
)

// ssoHarness runs control with the provider p as its identity provider and
// n setup-key agents.
func ssoHarness(t *testing.T, p *oidctest.Provider, n int, more ...func(*control.Options)) *controltest.Harness {
	t.Helper()
	return controltest.NewHarness(t, n, controltest.WithOptions(func(o *control.Options) {
		o.OIDC = control.OIDCOptions{Issuer: p.Issuer, ClientID: "meshd"}
		o.JanitorInterval = 20 * time.Millisecond
		for _, f := range more {
			f(o)
		}
	}))
}

// approveAs returns an approve function for LoginSSO that approves as subject.
func approveAs(p *oidctest.Provider, subject string) func(string) error {
	return func(code string) error { return p.Approve(code, subject) }
}

func listPeers(t *testing.T, h *controltest.Harness) map[string]*adminv1.Peer {
	t.Helper()
	l := must[adminv1.ListPeersResponse](t)(h.Admin.ListPeers(context.Background(), connect.NewRequest(&adminv1.ListPeersRequest{})))
	out := map[string]*adminv1.Peer{}
	for _, p := range l.Peers {
		out[p.Name] = p
	}
	return out
}

func sees(m *controltest.Map, name string) bool {
	return slices.Contains(controltest.PeerNames(m), name)
}

// A machine joins by the device flow: the person approves the code at the
// provider, the peer joins under its user (the account's first user owns
// it), reaches the other peers, and the audit log names the user. Logging
// in again keeps the address.
func TestSSODeviceFlowJoin(t *testing.T) {
	p := oidctest.New(t, oidctest.Options{})
	p.AddPerson(ann)
	h := ssoHarness(t, p, 1)
	laptop := h.NewAgent(controltest.AgentOptions{Hostname: "ann-laptop"})
	var shown string
	err := laptop.LoginSSO(func(code string) error { shown = code; return p.Approve(code, "ann") })
	if err != nil {
		t.Fatal(err)
	}
	if shown == "" {
		t.Fatal("no code shown to the person")
	}
	laptop.StartSync()
	laptop.WaitFor(t, "sees agent-0", func(m *controltest.Map) bool { return sees(m, "agent-0") })
	h.Agents[0].WaitFor(t, "sees the SSO peer", func(m *controltest.Map) bool { return sees(m, "ann-laptop") })

	peer := listPeers(t, h)["ann-laptop"]
	if peer.User != "ann@example.com" || peer.UserId == "" || !peer.LoginExpirationEnabled {
		t.Fatalf("SSO peer = user %q id %q expiration %v", peer.User, peer.UserId, peer.LoginExpirationEnabled)
	}
	if p0 := listPeers(t, h)["agent-0"]; p0.User != "" {
		t.Fatalf("setup-key peer has user %q", p0.User)
	}
	users := must[adminv1.ListUsersResponse](t)(h.Admin.ListUsers(context.Background(), connect.NewRequest(&adminv1.ListUsersRequest{})))
	if len(users.Users) != 1 {
		t.Fatalf("users = %v", users.Users)
	}
	u := users.Users[0]
	if u.Issuer != p.Issuer || u.Subject != "ann" || u.Email != "ann@example.com" || u.Name != "Ann" || u.Role != "owner" ||
		u.Blocked || !slices.Equal(u.Peers, []string{"ann-laptop"}) {
		t.Fatalf("user = %+v", u)
	}
	ev := must[adminv1.ListEventsResponse](t)(h.Admin.ListEvents(context.Background(), connect.NewRequest(&adminv1.ListEventsRequest{Limit: 50})))
	named := false
	for _, e := range ev.Events {
		named = named || (e.Action == "peer.added" && e.TargetName == "ann-laptop" && e.Actor == "user:ann@example.com")
	}
	if !named {
		t.Fatalf("no peer.added event by user:ann@example.com: %v", ev.Events)
	}

	ip := laptop.Self.OverlayIp
	if err := laptop.LoginSSO(approveAs(p, "ann")); err != nil {
		t.Fatal(err)
	}
	if laptop.Self.OverlayIp != ip {
		t.Fatalf("address changed on a new login: %s, was %s", laptop.Self.OverlayIp, ip)
	}
}

// Blocking a user takes their peers out of every map and ends their
// streams; a blocked person cannot log in; unblocking lets them back in;
// deleting the user deletes their peers.
func TestSSOBlockAndDeleteUser(t *testing.T) {
	p := oidctest.New(t, oidctest.Options{})
	p.AddPerson(ann)
	h := ssoHarness(t, p, 1)
	laptop := h.NewAgent(controltest.AgentOptions{Hostname: "ann-laptop"})
	if err := laptop.LoginSSO(approveAs(p, "ann")); err != nil {
		t.Fatal(err)
	}
	laptop.StartSync()
	h.Agents[0].WaitFor(t, "sees the SSO peer", func(m *controltest.Map) bool { return sees(m, "ann-laptop") })

	ctx := context.Background()
	must[adminv1.User](t)(h.Admin.UpdateUser(ctx, connect.NewRequest(&adminv1.UpdateUserRequest{Id: "ann@example.com", Blocked: ptr(true)})))
	h.Agents[0].WaitFor(t, "blocked user's peer gone", func(m *controltest.Map) bool { return !sees(m, "ann-laptop") })
	if err := laptop.WaitDone(t); !errors.Is(err, controlclient.ErrUserBlocked) {
		t.Fatalf("blocked user's sync ended with %v", err)
	}
	if err := laptop.LoginSSO(approveAs(p, "ann")); !errors.Is(err, controlclient.ErrUserBlocked) {
		t.Fatalf("blocked user logged in: %v", err)
	}
	if err := laptop.LoginWith(h.Boot.SetupKey); !errors.Is(err, controlclient.ErrUserBlocked) {
		t.Fatalf("blocked user's peer logged in with a setup key: %v", err)
	}

	must[adminv1.User](t)(h.Admin.UpdateUser(ctx, connect.NewRequest(&adminv1.UpdateUserRequest{Id: "ann", Blocked: ptr(false)})))
	if err := laptop.LoginSSO(approveAs(p, "ann")); err != nil {
		t.Fatalf("unblocked user: %v", err)
	}
	laptop.StartSync()
	h.Agents[0].WaitFor(t, "unblocked user's peer back", func(m *controltest.Map) bool { return sees(m, "ann-laptop") })

	must[adminv1.DeleteUserResponse](t)(h.Admin.DeleteUser(ctx, connect.NewRequest(&adminv1.DeleteUserRequest{Id: "ann"})))
	h.Agents[0].WaitFor(t, "deleted user's peer gone", func(m *controltest.Map) bool { return !sees(m, "ann-laptop") })
	if _, ok := listPeers(t, h)["ann-laptop"]; ok {
		t.Fatal("deleting the user left their peer")
	}
	ev := must[adminv1.ListEventsResponse](t)(h.Admin.ListEvents(ctx, connect.NewRequest(&adminv1.ListEventsRequest{Limit: 50})))
	if !slices.ContainsFunc(ev.Events, func(e *adminv1.Event) bool {
		return e.Action == "user.deleted" && e.TargetName == "ann@example.com"
	}) {
		t.Fatalf("no user.deleted event: %v", ev.Events)
	}
}

// ID tokens with the wrong audience, the wrong issuer or already expired
// are refused with a plain "login refused"; so is a person who denies.
func TestSSORefusedTokens(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts oidctest.Options
		deny bool
	}{
		{"wrong audience", oidctest.Options{Audience: "someone-else"}, false},
		{"wrong issuer", oidctest.Options{TokenIssuer: "https://evil.example"}, false},
		{"expired token", oidctest.Options{IDTokenLifetime: -time.Hour}, false},
		{"denied", oidctest.Options{}, true},
	} {
		t.Run(strings.ReplaceAll(tc.name, " ", "_"), func(t *testing.T) {
			p := oidctest.New(t, tc.opts)
			p.AddPerson(ann)
			h := ssoHarness(t, p, 0)
			a := h.NewAgent(controltest.AgentOptions{Hostname: "x"})
			err := a.LoginSSO(func(code string) error {
				if tc.deny {
					return p.Deny(code)
				}
				return p.Approve(code, "ann")
			})
			if !errors.Is(err, controlclient.ErrSSOFailed) || err.Error() != "login refused" {
				t.Fatalf("login: %v, want login refused", err)
			}
			if l := listPeers(t, h); len(l) != 0 {
				t.Fatalf("a refused login left peers: %v", l)
			}
			users := must[adminv1.ListUsersResponse](t)(h.Admin.ListUsers(context.Background(), connect.NewRequest(&adminv1.ListUsersRequest{})))
			if len(users.Users) != 0 {
				t.Fatalf("a refused login left users: %v", users.Users)
			}
		})
	}
}

// A code nobody approves in time tells the person to run the command again.
func TestSSOCodeExpires(t *testing.T) {
	p := oidctest.New(t, oidctest.Options{CodeLifetime: 2 * time.Second})
	h := ssoHarness(t, p, 0)
	err := h.NewAgent(controltest.AgentOptions{Hostname: "x"}).LoginSSO(func(string) error { return nil })
	if !errors.Is(err, controlclient.ErrSSOFailed) || !strings.Contains(err.Error(), "run the command again") {
		t.Fatalf("login: %v", err)
	}
}

// Without an identity provider, --sso says so.
func TestSSONotConfigured(t *testing.T) {
	h := controltest.NewHarness(t, 0)
	err := h.NewAgent(controltest.AgentOptions{Hostname: "x"}).LoginSSO(func(string) error { return nil })
	if err == nil || !strings.HasPrefix(err.Error(), "SSO is not configured on this server") {
		t.Fatalf("login: %v", err)
	}
}

// A provider down when control starts: control starts, setup keys work,
// SSO logins fail with a clear message until the provider answers.
func TestSSOProviderDownAtStart(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	h := controltest.NewHarness(t, 1, controltest.WithOptions(func(o *control.Options) {
		o.OIDC = control.OIDCOptions{Issuer: "http://" + addr, ClientID: "meshd"}
	}))
	h.Agents[0].WaitFor(t, "map", func(*controltest.Map) bool { return true })
	a := h.NewAgent(controltest.AgentOptions{Hostname: "x"})
	err = a.LoginSSO(func(string) error { return nil })
	if !errors.Is(err, controlclient.ErrSSOFailed) || !strings.Contains(err.Error(), "cannot reach the identity provider") {
		t.Fatalf("login with the provider down: %v", err)
	}
	p := oidctest.New(t, oidctest.Options{Addr: addr})
	p.AddPerson(ann)
	if err := a.LoginSSO(approveAs(p, "ann")); err != nil {
		t.Fatalf("login once the provider is up: %v", err)
	}
}

// Login expiration applies to SSO peers only: an expired one leaves the
// other peers' maps and is told to run `meshd up --sso`; a new approval
// restores it with the same address. Setup-key peers stay.
func TestSSOLoginExpiration(t *testing.T) {
	p := oidctest.New(t, oidctest.Options{})
	p.AddPerson(ann)
	h := ssoHarness(t, p, 2)
	laptop := h.NewAgent(controltest.AgentOptions{Hostname: "ann-laptop"})
	if err := laptop.LoginSSO(approveAs(p, "ann")); err != nil {
		t.Fatal(err)
	}
	laptop.StartSync()
	h.Agents[0].WaitFor(t, "sees the SSO peer", func(m *controltest.Map) bool { return sees(m, "ann-laptop") })
	setAccountExpiry(t, h, time.Hour)
	ip := laptop.Self.OverlayIp
	h.Clock.Advance(2 * time.Hour)
	h.Agents[0].WaitFor(t, "expired SSO peer gone", func(m *controltest.Map) bool { return !sees(m, "ann-laptop") && sees(m, "agent-1") })
	err := laptop.WaitDone(t)
	if !errors.Is(err, controlclient.ErrLoginExpired) || err.Error() != "login expired: run `meshd up --sso`" {
		t.Fatalf("expired SSO peer: %v", err)
	}
	if !h.Agents[1].Connected() {
		t.Fatal("a setup-key peer was cut off by login expiration")
	}
	if err := laptop.LoginSSO(approveAs(p, "ann")); err != nil {
		t.Fatal(err)
	}
	if laptop.Self.OverlayIp != ip {
		t.Fatalf("address after re-approval %s, was %s", laptop.Self.OverlayIp, ip)
	}
	laptop.StartSync()
	h.Agents[0].WaitFor(t, "re-approved SSO peer back", func(m *controltest.Map) bool { return sees(m, "ann-laptop") })
}

// On a desktop, the authorization code flow with PKCE: the browser goes
// from control's page to the provider and back to control's callback; the
// machine joins under the person. A used link does not work twice.
func TestSSOBrowserPKCE(t *testing.T) {
	var p *oidctest.Provider
	h := controltest.NewHarness(t, 0, controltest.WithOptions(func(o *control.Options) {
		p = oidctest.New(t, oidctest.Options{RedirectURIs: []string{o.PublicURL + "/sso/callback"}})
		p.AddPerson(ann)
		o.OIDC = control.OIDCOptions{Issuer: p.Issuer, ClientID: "meshd"}
	}))
	p.BrowserLogin("ann")
	a := h.NewAgent(controltest.AgentOptions{Hostname: "ann-desktop"})
	ctx, cancel := context.WithTimeout(context.Background(), controltest.WaitTimeout)
	defer cancel()
	browser := h.HTTPClient() // follows redirects: control (TLS), the provider (loopback http)
	var link string
	self, err := a.Client.LoginSSOWith(ctx, true, func(pr controlclient.SSOPrompt) {
		link = pr.URL
		if pr.Code != "" || !strings.HasPrefix(pr.URL, h.URL+"/sso/browser?h=") {
			t.Errorf("browser prompt = %+v", pr)
		}
		res, err := browser.Get(pr.URL)
		if err != nil {
			t.Error(err)
			return
		}
		res.Body.Close()
		if res.StatusCode != 200 || res.Request.URL.Path != "/sso/callback" {
			t.Errorf("browser ended at %s with %s", res.Request.URL, res.Status)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if self.Name != "ann-desktop" || listPeers(t, h)["ann-desktop"].User != "ann@example.com" {
		t.Fatalf("joined as %v, peers %v", self, listPeers(t, h))
	}
	res, err := browser.Get(link)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 404 {
		t.Fatalf("a used login link answered %s", res.Status)
	}
}
