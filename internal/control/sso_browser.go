package control

// The authorization code flow with PKCE, for a person at a desktop with a
// browser: the login's URL is a page of control's that sends the browser
// to the provider, which sends it back to control's callback with a code;
// control exchanges the code (with the PKCE verifier only it holds) and
// verifies the ID token (and its nonce) like a device login's.

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"html"
	"net/http"
	"time"

	"connectrpc.com/connect"
	"github.com/coreos/go-oidc/v3/oidc"
	"go.uber.org/zap"
	"golang.org/x/oauth2"
	"google.golang.org/protobuf/types/known/timestamppb"

	controlv1 "meshd/api/control/v1"
)

// Paths of the browser flow on control's server.
const (
	ssoBrowserPath  = "/sso/browser"
	ssoCallbackPath = "/sso/callback"
)

// browserLoginTTL is how long a browser login may take.
const browserLoginTTL = 10 * time.Minute

// browserLogin is what the browser flow of a pending login keeps.
type browserLogin struct {
	verifier, nonce string
	started         bool // the browser went to the provider (once)
	// returnTo: a web login's page (sso_web.go), which finishes it.
	returnTo string
}

// startBrowser makes a pending login for the browser flow.
func (c *ssoClient) startBrowser(ctx context.Context, publicURL, pub, src string) (*controlv1.StartSSOLoginResponse, error) {
	if publicURL == "" {
		return nil, connect.NewError(connect.CodeFailedPrecondition, errors.New("the browser login needs control's public URL (--public-url)"))
	}
	if err := c.full(src); err != nil {
		return nil, err
	}
	if _, err := c.discover(ctx); err != nil {
		c.log.Warn("identity provider unreachable", zap.Error(err))
		return nil, refuseSSOUnreachable.err("")
	}
	handle := randomToken()
	pl := &pendingLogin{pub: pub, src: src, browser: &browserLogin{verifier: oauth2.GenerateVerifier(), nonce: randomToken()}}
	c.mu.Lock()
	c.logins[handle] = pl
	c.mu.Unlock()
	time.AfterFunc(browserLoginTTL, func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		if !pl.done {
			pl.done, pl.err = true, refuseSSOExpiredCode.err("")
		}
	})
	time.AfterFunc(browserLoginTTL+ssoKeep, func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.logins[handle] == pl {
			delete(c.logins, handle)
		}
	})
	return &controlv1.StartSSOLoginResponse{VerificationUrl: publicURL + ssoBrowserPath + "?h=" + handle, Handle: handle,
		Expires: timestamppb.New(time.Now().Add(browserLoginTTL)), IntervalSeconds: 1}, nil
}

func randomToken() string {
	var b [18]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("control: crypto/rand: " + err.Error())
	}
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// browserHandlers serves the browser flow's two pages.
func (s *Service) browserHandlers(m Mux) {
	c := s.sso
	redirect := s.opts.PublicURL + ssoCallbackPath
	page := func(w http.ResponseWriter, code int, msg string) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.WriteHeader(code)
		_, _ = w.Write([]byte("<!doctype html><title>meshd</title><p>" + html.EscapeString(msg) + "</p>\n"))
	}
	m.Handle(ssoBrowserPath, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := r.URL.Query().Get("h")
		c.mu.Lock()
		pl := c.logins[h]
		ok := pl != nil && pl.browser != nil && !pl.browser.started && !pl.done
		if ok {
			pl.browser.started = true
		}
		c.mu.Unlock()
		p, err := c.discover(r.Context())
		if !ok || err != nil {
			page(w, http.StatusNotFound, "This login link is unknown, used or expired: run the command again.")
			return
		}
		cfg := c.config(p)
		cfg.RedirectURL = redirect
		http.Redirect(w, r, cfg.AuthCodeURL(h, oauth2.S256ChallengeOption(pl.browser.verifier), oidc.Nonce(pl.browser.nonce)), http.StatusFound)
	}))
	m.Handle(ssoCallbackPath, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		h := q.Get("state")
		c.mu.Lock()
		pl := c.logins[h]
		ok := pl != nil && pl.browser != nil && pl.browser.started && !pl.done
		c.mu.Unlock()
		if !ok {
			page(w, http.StatusNotFound, "This login is unknown, finished or expired: run the command again.")
			return
		}
		if webReturn(w, r, pl.browser) {
			return
		}
		id, err := c.exchange(r.Context(), redirect, q.Get("code"), q.Get("error"), pl.browser)
		c.mu.Lock()
		if !pl.done {
			pl.done, pl.id, pl.err = true, id, err
		}
		c.mu.Unlock()
		if err != nil {
			page(w, http.StatusForbidden, "Login refused.")
			return
		}
		page(w, http.StatusOK, "Logged in to meshd: you can close this window.")
	}))
}

// exchange turns the provider's code into a verified person.
func (c *ssoClient) exchange(ctx context.Context, redirect, code, perr string, b *browserLogin) (*identity, error) {
	if perr != "" || code == "" {
		c.log.Info("SSO browser login refused by the provider", zap.String("error", perr))
		return nil, refuseSSORefused.err("")
	}
	p, err := c.discover(ctx)
	if err != nil {
		return nil, refuseSSOUnreachable.err("")
	}
	cfg := c.config(p)
	cfg.RedirectURL = redirect
	hctx := oidc.ClientContext(ctx, c.opts.HTTPClient)
	tok, err := cfg.Exchange(hctx, code, oauth2.VerifierOption(b.verifier))
	if err != nil {
		c.log.Info("SSO browser login: code exchange failed", zap.Error(err))
		return nil, refuseSSORefused.err("")
	}
	id, nonce, err := c.verifyNonce(hctx, p, tok)
	if err == nil && nonce != b.nonce {
		err = errors.New("sso: id token nonce does not match the login's")
	}
	if err != nil {
		c.log.Warn("SSO login refused: ID token not accepted", zap.Error(err))
		return nil, refuseSSORefused.err("")
	}
	return id, nil
}
