// Package oidctest runs a real OpenID provider in-process for tests:
// zitadel/oidc's op package (discovery, JWKS, the token endpoint and the
// device authorization grant of RFC 8628) over an in-memory storage kept
// here, with people, a groups claim and an Approve helper that plays the
// person in the browser. Options bend it for negative tests: another
// audience, another issuer in tokens, tokens that are already expired.
// Only tests import it.
package oidctest

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"
)

// Person is someone the provider knows.
type Person struct {
	Subject string
	Email   string
	Name    string
	Groups  []string
}

// Options of a Provider.
type Options struct {
	// ClientID of the relying party (control); default "meshd".
	ClientID string
	// Audience, when set, is the only audience of ID tokens (and their
	// authorized party) instead of ClientID: a token for someone else.
	Audience string
	// TokenIssuer, when set, is the issuer written into tokens instead of
	// the provider's own.
	TokenIssuer string
	// IDTokenLifetime; zero: an hour. Negative: tokens are issued expired.
	IDTokenLifetime time.Duration
	// CodeLifetime of device codes; zero: five minutes.
	CodeLifetime time.Duration
	// Addr to listen on; empty: a free loopback port. Tests that stop and
	// start the provider again give the same address.
	Addr string
	// RedirectURIs the client may use in the authorization code flow.
	RedirectURIs []string
}

// Provider is a running OpenID provider.
type Provider struct {
	Issuer string
	opts   Options
	srv    *httptest.Server
	st     *storage
}

// New starts a provider on loopback; it stops at the end of the test.
func New(tb testing.TB, opts Options) *Provider {
	tb.Helper()
	p, err := Start(opts)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(p.Close)
	return p
}

// Start starts a provider; the caller closes it.
func Start(opts Options) (*Provider, error) {
	if opts.ClientID == "" {
		opts.ClientID = "meshd"
	}
	if opts.IDTokenLifetime == 0 {
		opts.IDTokenLifetime = time.Hour
	}
	if opts.CodeLifetime == 0 {
		opts.CodeLifetime = 5 * time.Minute
	}
	addr := opts.Addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("oidctest: listen: %w", err)
	}
	issuer := "http://" + ln.Addr().String()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	st := &storage{opts: opts, key: key, people: map[string]Person{}, codes: map[string]*deviceAuth{},
		tokens: map[string]tokenInfo{}, authReqs: map[string]*authRequest{}}
	cfg := &op.Config{
		CodeMethodS256:  true,
		SupportedScopes: []string{oidc.ScopeOpenID, oidc.ScopeProfile, oidc.ScopeEmail, "groups"},
		DeviceAuthorization: op.DeviceAuthorizationConfig{
			Lifetime: opts.CodeLifetime, PollInterval: time.Second, UserFormPath: "/device", UserCode: op.UserCodeBase20,
		},
	}
	if _, err := rand.Read(cfg.CryptoKey[:]); err != nil {
		return nil, err
	}
	tokenPath := op.DefaultEndpoints.Token.Relative()
	issuerFn := func(insecure bool) (op.IssuerFromRequest, error) {
		return func(r *http.Request) string {
			if opts.TokenIssuer != "" && r.URL.Path == tokenPath {
				return opts.TokenIssuer
			}
			return issuer
		}, nil
	}
	h, err := op.NewProvider(cfg, st, issuerFn, op.WithAllowInsecure(), op.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("oidctest: %w", err)
	}
	pr := &Provider{Issuer: issuer, opts: opts, st: st}
	mux := http.NewServeMux()
	mux.HandleFunc("/login", pr.loginPage)
	mux.Handle("/", h)
	srv := httptest.NewUnstartedServer(mux)
	srv.Listener.Close()
	srv.Listener = ln
	srv.Start()
	pr.srv = srv
	return pr, nil
}

// Close stops the provider.
func (p *Provider) Close() { p.srv.Close() }

// AddPerson adds (or replaces) someone who can approve logins.
func (p *Provider) AddPerson(x Person) {
	p.st.mu.Lock()
	defer p.st.mu.Unlock()
	p.st.people[x.Subject] = x
}

// ErrNoSuchCode means no pending device authorization has that user code.
var ErrNoSuchCode = errors.New("oidctest: no pending device authorization with that user code")

// Approve plays the person who opened the verification URL, logged in as
// subject and entered userCode.
func (p *Provider) Approve(userCode, subject string) error {
	p.st.mu.Lock()
	defer p.st.mu.Unlock()
	if _, ok := p.st.people[subject]; !ok {
		return fmt.Errorf("oidctest: no person %q", subject)
	}
	for _, d := range p.st.codes {
		if d.userCode == userCode && !d.state.Done && !d.state.Denied {
			d.state.Done, d.state.Subject, d.state.AuthTime, d.state.AMR = true, subject, time.Now(), []string{"pwd"}
			return nil
		}
	}
	return ErrNoSuchCode
}

// Deny plays the person refusing the login.
func (p *Provider) Deny(userCode string) error {
	p.st.mu.Lock()
	defer p.st.mu.Unlock()
	for _, d := range p.st.codes {
		if d.userCode == userCode {
			d.state.Denied = true
			return nil
		}
	}
	return ErrNoSuchCode
}

// WaitCode waits until a device authorization is pending and returns its
// user code (for tests that do not see what the client printed).
func (p *Provider) WaitCode(ctx context.Context) (string, error) {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		p.st.mu.Lock()
		for _, d := range p.st.codes {
			if !d.state.Done && !d.state.Denied {
				p.st.mu.Unlock()
				return d.userCode, nil
			}
		}
		p.st.mu.Unlock()
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("oidctest: no device authorization pending: %w", ctx.Err())
		case <-t.C:
		}
	}
}

func rand16() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err)
	}
	return fmt.Sprintf("%x", b)
}
