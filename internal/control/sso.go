package control

// Single sign-on: control is the OpenID Connect relying party. Agents and
// `meshd admin login` reach only control, which brokers the OAuth 2.0
// device authorization grant (RFC 8628) with the identity provider: it
// asks the provider for a code, polls the provider's token endpoint until
// the person approved in a browser, verifies the ID token (signature
// through the provider's JWKS, issuer, audience, expiry), and registers the
// peer for that person. go-oidc does discovery and verification,
// golang.org/x/oauth2 the device grant.
//
// A half-finished login lives only in memory, until it is finished or its
// code expires; nothing of it is written.

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"sync"
	"time"
	"unicode/utf8"

	"connectrpc.com/connect"
	"github.com/coreos/go-oidc/v3/oidc"
	"go.uber.org/zap"
	"golang.org/x/oauth2"
	"google.golang.org/protobuf/types/known/timestamppb"

	controlv1 "meshd/api/control/v1"
	"meshd/internal/keys"
	"meshd/internal/seal"
)

// OIDCOptions configure single sign-on; without Issuer there is none.
type OIDCOptions struct {
	// Issuer is the provider's issuer URL (discovery at
	// Issuer/.well-known/openid-configuration).
	Issuer       string
	ClientID     string
	ClientSecret string // empty for a public client
	// GroupsClaim names the ID token claim listing the person's groups;
	// empty: "groups".
	GroupsClaim string
	// Scopes asked for; empty: openid, profile, email.
	Scopes []string
	// HTTPClient reaches the provider; nil: one with a 30 s timeout.
	HTTPClient *http.Client
}

// DefaultGroupsClaim is the claim read for groups unless told otherwise.
const DefaultGroupsClaim = "groups"

// ssoKeep is how long a finished login waits for its caller to collect it.
const ssoKeep = time.Minute

var (
	errSSONotConfigured = connect.NewError(connect.CodeFailedPrecondition,
		errors.New("SSO is not configured on this server: join with a setup key (--setup-key KEY), or start control with --oidc-issuer"))
	refuseSSOUnreachable = refusal{controlv1.Reason_REASON_SSO_FAILED, connect.CodeUnavailable,
		"SSO login failed: control cannot reach the identity provider; try again later, or join with a setup key", ""}
	refuseSSOExpiredCode = refusal{controlv1.Reason_REASON_SSO_FAILED, connect.CodeDeadlineExceeded,
		"SSO login code expired before it was approved: run the command again", ""}
	refuseSSORefused = refusal{controlv1.Reason_REASON_SSO_FAILED, connect.CodePermissionDenied,
		"login refused", ""}
	refuseSSOUnknown = refusal{controlv1.Reason_REASON_SSO_FAILED, connect.CodeNotFound,
		"SSO login unknown or expired: run the command again", ""}
)

// identity is what a verified ID token says about the person.
type identity struct {
	issuer, subject, email, name string
	groups                       []string
}

// pendingLogin is a device authorization in progress.
type pendingLogin struct {
	pub string // the peer key it is for; "" for an admin's login
	src string // who started it (loginSource)
	// browser: the authorization code flow (sso_browser.go); nil for a
	// device login.
	browser *browserLogin
	done    bool
	id      *identity
	err     error
}

// ssoClient talks to the identity provider.
type ssoClient struct {
	opts OIDCOptions
	log  *zap.Logger

	discMu   sync.Mutex     // one discovery at a time, without holding mu
	mu       sync.Mutex     // guards the fields below
	provider *oidc.Provider // nil until discovery worked
	logins   map[string]*pendingLogin
}

// maxPendingLogins bounds the logins waiting for approval: each polls the
// provider until its code expires, and anyone who reaches control can
// start one.
const maxPendingLogins = 256

// maxPendingPerSource bounds the logins one address (an IPv6 /64) may have
// waiting, so that one client cannot take every slot of maxPendingLogins
// and keep everyone else from logging in.
const maxPendingPerSource = 8

// loginSource is the address a login is counted against: the IP of addr
// (host:port), its /64 for IPv6.
func loginSource(addr string) string {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return addr
	}
	ip := ap.Addr().Unmap()
	if ip.Is6() {
		p, _ := ip.Prefix(64)
		return p.String()
	}
	return ip.String()
}

func newSSOClient(o OIDCOptions, log *zap.Logger) *ssoClient {
	if o.GroupsClaim == "" {
		o.GroupsClaim = DefaultGroupsClaim
	}
	if len(o.Scopes) == 0 {
		o.Scopes = []string{oidc.ScopeOpenID, "profile", "email"}
	}
	if o.HTTPClient == nil {
		o.HTTPClient = &http.Client{Timeout: 30 * time.Second}
	}
	return &ssoClient{opts: o, log: log.Named("sso"), logins: map[string]*pendingLogin{}}
}

// discover fetches the provider's configuration, once it succeeds; a
// provider down at control's start is tried again at the next login.
func (c *ssoClient) discover(ctx context.Context) (*oidc.Provider, error) {
	c.discMu.Lock()
	defer c.discMu.Unlock()
	c.mu.Lock()
	p := c.provider
	c.mu.Unlock()
	if p != nil {
		return p, nil
	}
	ctx, cancel := context.WithTimeout(oidc.ClientContext(ctx, c.opts.HTTPClient), 15*time.Second)
	defer cancel()
	p, err := oidc.NewProvider(ctx, c.opts.Issuer)
	if err != nil {
		return nil, fmt.Errorf("sso: discovery at %s: %w", c.opts.Issuer, err)
	}
	if p.Endpoint().DeviceAuthURL == "" {
		return nil, fmt.Errorf("sso: %s offers no device authorization endpoint: enable the device flow for client %s", c.opts.Issuer, c.opts.ClientID)
	}
	c.mu.Lock()
	c.provider = p
	c.mu.Unlock()
	return p, nil
}

func (c *ssoClient) config(p *oidc.Provider) *oauth2.Config {
	ep := p.Endpoint()
	if c.opts.ClientSecret == "" {
		ep.AuthStyle = oauth2.AuthStyleInParams
	}
	return &oauth2.Config{ClientID: c.opts.ClientID, ClientSecret: c.opts.ClientSecret, Endpoint: ep, Scopes: c.opts.Scopes}
}

// start asks the provider for a device code and polls for its token in the
// background until ctx ends or the code expires.
func (c *ssoClient) start(ctx, bg context.Context, pub, src string) (*controlv1.StartSSOLoginResponse, error) {
	if err := c.full(src); err != nil {
		return nil, err
	}
	p, err := c.discover(ctx)
	if err != nil {
		c.log.Warn("identity provider unreachable", zap.Error(err))
		return nil, refuseSSOUnreachable.err("")
	}
	cfg := c.config(p)
	hctx := oidc.ClientContext(ctx, c.opts.HTTPClient)
	da, err := cfg.DeviceAuth(hctx)
	if err != nil {
		c.log.Warn("device authorization refused", zap.Error(err))
		return nil, refuseSSOUnreachable.err("")
	}
	var b [18]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, connect.NewError(connect.CodeInternal, err)
	}
	handle := base64.RawURLEncoding.EncodeToString(b[:])
	pl := &pendingLogin{pub: pub, src: src}
	c.mu.Lock()
	c.logins[handle] = pl
	c.mu.Unlock()
	go c.poll(bg, cfg, p, da, handle, pl)
	if da.Interval <= 0 {
		da.Interval = 5
	}
	return &controlv1.StartSSOLoginResponse{VerificationUrl: da.VerificationURI, VerificationUrlComplete: da.VerificationURIComplete,
		UserCode: da.UserCode, Handle: handle, Expires: timestamppb.New(da.Expiry), IntervalSeconds: uint32(da.Interval)}, nil
}

// full refuses a new login while maxPendingLogins wait, or
// maxPendingPerSource of src.
func (c *ssoClient) full(src string) error {
	c.mu.Lock()
	n, mine := len(c.logins), 0
	for _, pl := range c.logins {
		if pl.src == src && !pl.done {
			mine++
		}
	}
	c.mu.Unlock()
	if n >= maxPendingLogins {
		return connect.NewError(connect.CodeResourceExhausted, errors.New("too many SSO logins waiting for approval: try again in a few minutes"))
	}
	if mine >= maxPendingPerSource {
		return connect.NewError(connect.CodeResourceExhausted, fmt.Errorf("%d SSO logins from this address are waiting for approval: finish one, or wait until their codes expire", mine))
	}
	return nil
}

// poll waits for the person's approval and records the outcome.
func (c *ssoClient) poll(ctx context.Context, cfg *oauth2.Config, p *oidc.Provider, da *oauth2.DeviceAuthResponse, handle string, pl *pendingLogin) {
	if da.Expiry.IsZero() {
		da.Expiry = time.Now().Add(10 * time.Minute) // RFC 8628 makes expires_in required; bound it anyway
	}
	hctx := oidc.ClientContext(ctx, c.opts.HTTPClient)
	tok, err := cfg.DeviceAccessToken(hctx, da)
	var id *identity
	var re *oauth2.RetrieveError
	switch {
	case errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &re) && re.ErrorCode == "expired_token"):
		err = refuseSSOExpiredCode.err("")
	case errors.Is(err, context.Canceled):
		err = connect.NewError(connect.CodeUnavailable, errors.New("control is shutting down"))
	case err != nil && !errors.As(err, &re):
		// Not an answer of the provider's: it went away during the login.
		c.log.Warn("identity provider unreachable during an SSO login", zap.Error(err))
		err = refuseSSOUnreachable.err("")
	case err != nil:
		c.log.Info("SSO login refused by the provider", zap.Error(err))
		err = refuseSSORefused.err("")
	default:
		if id, err = c.verify(hctx, p, tok); err != nil {
			c.log.Warn("SSO login refused: ID token not accepted", zap.Error(err))
			err = refuseSSORefused.err("")
		}
	}
	c.mu.Lock()
	pl.done, pl.id, pl.err = true, id, err
	c.mu.Unlock()
	time.AfterFunc(ssoKeep, func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.logins[handle] == pl {
			delete(c.logins, handle)
		}
	})
}

// verify checks the ID token of a token response: signature, issuer,
// audience and expiry.
func (c *ssoClient) verify(ctx context.Context, p *oidc.Provider, tok *oauth2.Token) (*identity, error) {
	id, _, err := c.verifyNonce(ctx, p, tok)
	return id, err
}

// verifyNonce is verify that also returns the token's nonce.
func (c *ssoClient) verifyNonce(ctx context.Context, p *oidc.Provider, tok *oauth2.Token) (*identity, string, error) {
	raw, _ := tok.Extra("id_token").(string)
	if raw == "" {
		return nil, "", errors.New("sso: the token response has no id_token: ask for the openid scope")
	}
	idt, err := p.Verifier(&oidc.Config{ClientID: c.opts.ClientID}).Verify(ctx, raw)
	if err != nil {
		return nil, "", fmt.Errorf("sso: verify id token: %w", err)
	}
	var claims map[string]any
	if err := idt.Claims(&claims); err != nil {
		return nil, "", fmt.Errorf("sso: id token claims: %w", err)
	}
	id := &identity{issuer: idt.Issuer, subject: idt.Subject}
	id.email, _ = claims["email"].(string)
	id.name, _ = claims["name"].(string)
	if id.name == "" {
		id.name, _ = claims["preferred_username"].(string)
	}
	// People often edit their own name and email at the provider: what
	// reaches terminals, logs and the dashboard is printable and short.
	id.email, id.name = idpText(id.email), idpText(id.name)
	switch g := claims[c.opts.GroupsClaim].(type) {
	case []any:
		for _, v := range g {
			if s, ok := v.(string); ok && s != "" {
				id.groups = append(id.groups, s)
			}
		}
	case string:
		id.groups = []string{g}
	}
	if len(id.groups) > maxIdPGroups {
		c.log.Warn("groups claim too long: only the first groups are synced", zap.Int("groups", len(id.groups)), zap.Int("kept", maxIdPGroups))
		id.groups = id.groups[:maxIdPGroups]
	}
	return id, idt.Nonce, nil
}

// maxIdPGroups bounds the groups one login syncs: each becomes a group of
// every policy compilation, and a claim is as long as the provider makes it.
const maxIdPGroups = 100

// maxIdPText bounds an email or name from the provider.
const maxIdPText = 256

// idpText is an email or name from the provider without control
// characters, bidirectional overrides or invalid UTF-8, at most
// maxIdPText bytes (cut at a rune boundary).
func idpText(s string) string {
	s = cleanAgentText(s)
	if len(s) <= maxIdPText {
		return s
	}
	s = s[:maxIdPText]
	for len(s) > 0 && !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s
}

// finish returns the outcome of a login: pending (nil, nil, false), or the
// verified person, or why not. A finished login is forgotten once its own
// caller collected it: pub is the key that proved itself ("" for an
// admin's login), and a caller with another key learns nothing and takes
// nothing away.
func (c *ssoClient) finish(handle, pub string) (pl pendingLogin, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	p := c.logins[handle]
	if p == nil || p.pub != pub {
		return pendingLogin{}, false
	}
	if p.done {
		delete(c.logins, handle)
	}
	return *p, true
}

func (p *peerAPI) StartSSOLogin(ctx context.Context, req *connect.Request[controlv1.StartSSOLoginRequest]) (*connect.Response[controlv1.StartSSOLoginResponse], error) {
	s := p.s
	if s.sso == nil {
		return nil, errSSONotConfigured
	}
	var pub string
	if len(req.Msg.PublicKey) > 0 {
		k, err := keys.FromBytes(req.Msg.PublicKey)
		if err != nil {
			return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("public key is not 32 bytes"))
		}
		pub = k.String()
	}
	if req.Msg.Browser && pub == "" {
		// A browser login's link finishes the login for whoever holds its
		// handle: an admin session from one would go to whoever sent an
		// owner the link. Admins log in by the device flow, whose code the
		// person types.
		return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("the browser login is for machines: log in as an admin with the device flow (meshd admin login)"))
	}
	src := loginSource(req.Peer().Addr)
	start := func() (*controlv1.StartSSOLoginResponse, error) { return s.sso.start(ctx, s.ctx, pub, src) }
	if req.Msg.Browser {
		start = func() (*controlv1.StartSSOLoginResponse, error) {
			return s.sso.startBrowser(ctx, s.opts.PublicURL, pub, src)
		}
	}
	res, err := start()
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(res), nil
}

func (p *peerAPI) FinishSSOLogin(ctx context.Context, req *connect.Request[controlv1.FinishSSOLoginRequest]) (*connect.Response[controlv1.FinishSSOLoginResponse], error) {
	s := p.s
	if s.sso == nil {
		return nil, errSSONotConfigured
	}
	var pub keys.Key
	if req.Msg.Proof != nil {
		var err error
		if pub, err = s.verify(ctx, req.Msg.Proof, seal.PurposeLogin); err != nil {
			return nil, err
		}
	}
	var who string
	if req.Msg.Proof != nil {
		who = pub.String()
	}
	pl, ok := s.sso.finish(req.Msg.Handle, who)
	switch {
	case !ok:
		return nil, refuseSSOUnknown.err("")
	case !pl.done:
		return connect.NewResponse(&controlv1.FinishSSOLoginResponse{Pending: true}), nil
	case pl.err != nil:
		return nil, pl.err
	}
	accts := s.accountList()
	if len(accts) == 0 {
		return nil, connect.NewError(connect.CodeFailedPrecondition, errors.New("control has no account yet"))
	}
	a := accts[0] // single sign-on serves the first account
	if req.Msg.Proof == nil {
		res, err := a.adminSession(ctx, pl.id)
		if err != nil {
			return nil, err
		}
		return connect.NewResponse(res), nil
	}
	meta, err := checkMeta(req.Msg.Meta)
	if err != nil {
		return nil, err
	}
	if meta == nil {
		meta = &controlv1.PeerMeta{}
	}
	self, user, err := a.ssoLogin(ctx, pub.String(), pl.id, meta)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&controlv1.FinishSSOLoginResponse{Self: self, User: user}), nil
}
