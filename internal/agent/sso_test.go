package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"go.uber.org/zap/zaptest"

	adminv1 "meshd/api/admin/v1"
	"meshd/internal/control"
	"meshd/internal/control/controltest"
	"meshd/internal/daemon"
	"meshd/internal/oidctest"
	"meshd/internal/signal/signaltest"
	"meshd/internal/testutil"
	"meshd/internal/tlsconf"
	"meshd/wg"
)

// A machine joins by single sign-on: while it waits, its status (and
// `meshd status --json`) shows self.login with the URL and code; once the
// person approves, it is up and control lists it under the person.
func TestAgentJoinsBySSO(t *testing.T) {
	p := oidctest.New(t, oidctest.Options{})
	p.AddPerson(oidctest.Person{Subject: "ann", Email: "ann@example.com"})
	sig := signaltest.Start(t, signaltest.Options{})
	h := controltest.NewHarness(t, 0, controltest.WithOptions(func(o *control.Options) {
		o.SignalURL, o.SignalPin = sig.URL, sig.Pin
		o.OIDC = control.OIDCOptions{Issuer: p.Issuer, ClientID: "meshd"}
	}))
	e, err := New(Options{
		StateDir: filepath.Join(t.TempDir(), "laptop"), ControlURL: h.URL, Pin: tlsconf.Pin(h.Server.Certificate().Raw),
		SSO: true, Hostname: "laptop", Device: wg.Config{Mode: wg.ModeNetstack, Name: "laptop"},
		Clients: RealClients(), IncludeLoopback: true, Log: zaptest.NewLogger(t).Named("laptop"),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); e.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	testutil.WaitFor(t, 10*time.Second, "login prompt in status", func() bool { return e.Status().Self.GetLogin() != nil })
	var out bytes.Buffer
	if err := daemon.WriteJSON(&out, e.Status()); err != nil {
		t.Fatal(err)
	}
	var st struct {
		Self struct {
			Login struct{ URL, Code string } `json:"login"`
		} `json:"self"`
	}
	if err := json.Unmarshal(out.Bytes(), &st); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(st.Self.Login.URL, p.Issuer) || st.Self.Login.Code == "" {
		t.Fatalf("status --json while waiting: %s", out.String())
	}
	if err := p.Approve(st.Self.Login.Code, "ann"); err != nil {
		t.Fatal(err)
	}
	waitUp(t, e)
	if l := e.Status().Self.GetLogin(); l != nil {
		t.Fatalf("login prompt still shown after the login: %v", l)
	}
	peers, err := h.Admin.ListPeers(context.Background(), connect.NewRequest(&adminv1.ListPeersRequest{}))
	if err != nil || len(peers.Msg.Peers) != 1 || peers.Msg.Peers[0].User != "ann@example.com" {
		t.Fatalf("peers = %v, %v", peers, err)
	}
}

// On a desktop, the browser flow: status shows control's login page (no
// code); the browser's round trip through the provider brings the agent up.
func TestAgentJoinsBySSOBrowser(t *testing.T) {
	var p *oidctest.Provider
	sig := signaltest.Start(t, signaltest.Options{})
	h := controltest.NewHarness(t, 0, controltest.WithOptions(func(o *control.Options) {
		p = oidctest.New(t, oidctest.Options{RedirectURIs: []string{o.PublicURL + "/sso/callback"}})
		p.AddPerson(oidctest.Person{Subject: "ann", Email: "ann@example.com"})
		o.SignalURL, o.SignalPin = sig.URL, sig.Pin
		o.OIDC = control.OIDCOptions{Issuer: p.Issuer, ClientID: "meshd"}
	}))
	p.BrowserLogin("ann")
	e, err := New(Options{
		StateDir: filepath.Join(t.TempDir(), "desktop"), ControlURL: h.URL, Pin: tlsconf.Pin(h.Server.Certificate().Raw),
		SSOBrowser: true, Hostname: "desktop", Device: wg.Config{Mode: wg.ModeNetstack, Name: "desktop"},
		Clients: RealClients(), IncludeLoopback: true, Log: zaptest.NewLogger(t).Named("desktop"),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); e.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	testutil.WaitFor(t, 10*time.Second, "login prompt in status", func() bool { return e.Status().Self.GetLogin() != nil })
	l := e.Status().Self.GetLogin()
	if l.Code != "" || !strings.HasPrefix(l.Url, h.URL+"/sso/browser?h=") {
		t.Fatalf("browser login prompt = %v", l)
	}
	res, err := h.HTTPClient().Get(l.Url)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 200 {
		t.Fatalf("browser: %s at %s", res.Status, res.Request.URL)
	}
	waitUp(t, e)
}
