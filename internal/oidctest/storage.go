package oidctest

import (
	"context"
	"crypto/rsa"
	"errors"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"
)

// storage is the provider's in-memory state: one public client (control),
// people, device authorizations and access tokens. What the device grant
// does not use (authorization codes, refresh tokens, JWT profiles) answers
// "not supported".
type storage struct {
	opts Options
	key  *rsa.PrivateKey

	mu     sync.Mutex
	people map[string]Person
	codes  map[string]*deviceAuth // by device code
	tokens map[string]tokenInfo
	// The authorization code flow (authcode.go).
	authReqs       map[string]*authRequest
	browserSubject string
}

type deviceAuth struct {
	userCode string
	state    op.DeviceAuthorizationState
}

type tokenInfo struct {
	subject string
	expires time.Time
}

var (
	_ op.Storage                    = (*storage)(nil)
	_ op.DeviceAuthorizationStorage = (*storage)(nil)
	_ op.CanSetUserinfoFromRequest  = (*storage)(nil)
)

var errUnsupported = errors.New("oidctest: not supported by the test provider")

const keyID = "oidctest-1"

func (s *storage) Health(context.Context) error { return nil }

// Device authorization.

func (s *storage) StoreDeviceAuthorization(ctx context.Context, clientID, deviceCode, userCode string, expires time.Time, scopes []string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if clientID != s.opts.ClientID {
		return errors.New("oidctest: unknown client " + clientID)
	}
	for _, d := range s.codes {
		if d.userCode == userCode {
			return op.ErrDuplicateUserCode
		}
	}
	s.codes[deviceCode] = &deviceAuth{userCode: userCode,
		state: op.DeviceAuthorizationState{ClientID: clientID, Scopes: scopes, Expires: expires}}
	return nil
}

func (s *storage) GetDeviceAuthorizatonState(ctx context.Context, clientID, deviceCode string) (*op.DeviceAuthorizationState, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	d := s.codes[deviceCode]
	if d == nil || d.state.ClientID != clientID {
		return nil, errors.New("oidctest: no such device code")
	}
	st := d.state
	if st.Done {
		delete(s.codes, deviceCode) // a device code gives one token
		if s.opts.Audience != "" {
			st.ClientID, st.Audience = s.opts.Audience, []string{s.opts.Audience}
		}
	}
	return &st, nil
}

// Tokens.

func (s *storage) CreateAccessToken(ctx context.Context, req op.TokenRequest) (string, time.Time, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	id := rand16()
	exp := time.Now().Add(time.Hour)
	s.tokens[id] = tokenInfo{subject: req.GetSubject(), expires: exp}
	return id, exp, nil
}

func (s *storage) CreateAccessAndRefreshTokens(ctx context.Context, req op.TokenRequest, current string) (string, string, time.Time, error) {
	id, exp, err := s.CreateAccessToken(ctx, req)
	return id, "", exp, err
}

func (s *storage) SigningKey(context.Context) (op.SigningKey, error) { return signingKey{s.key}, nil }

func (s *storage) SignatureAlgorithms(context.Context) ([]jose.SignatureAlgorithm, error) {
	return []jose.SignatureAlgorithm{jose.RS256}, nil
}

func (s *storage) KeySet(context.Context) ([]op.Key, error) {
	return []op.Key{publicKey{&s.key.PublicKey}}, nil
}

// Clients and claims.

func (s *storage) GetClientByClientID(ctx context.Context, clientID string) (op.Client, error) {
	if clientID != s.opts.ClientID {
		return nil, errors.New("oidctest: unknown client " + clientID)
	}
	return client{id: clientID, lifetime: s.opts.IDTokenLifetime, redirects: s.opts.RedirectURIs}, nil
}

func (s *storage) AuthorizeClientIDSecret(ctx context.Context, clientID, secret string) error {
	return errors.New("oidctest: the client is public: it has no secret")
}

func (s *storage) SetUserinfoFromScopes(ctx context.Context, ui *oidc.UserInfo, userID, clientID string, scopes []string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	x, ok := s.people[userID]
	if !ok {
		return errors.New("oidctest: no person " + userID)
	}
	ui.Subject = x.Subject
	for _, sc := range scopes {
		switch sc {
		case oidc.ScopeEmail:
			ui.Email, ui.EmailVerified = x.Email, true
		case oidc.ScopeProfile:
			ui.Name, ui.PreferredUsername = x.Name, x.Subject
		}
	}
	// The groups claim, as providers configured for it send it.
	ui.AppendClaims("groups", append([]string{}, x.Groups...))
	return nil
}

func (s *storage) SetUserinfoFromRequest(ctx context.Context, ui *oidc.UserInfo, req op.IDTokenRequest, scopes []string) error {
	return nil
}

func (s *storage) SetUserinfoFromToken(ctx context.Context, ui *oidc.UserInfo, tokenID, subject, origin string) error {
	s.mu.Lock()
	t, ok := s.tokens[tokenID]
	s.mu.Unlock()
	if !ok || time.Now().After(t.expires) {
		return errors.New("oidctest: token expired or unknown")
	}
	return s.SetUserinfoFromScopes(ctx, ui, t.subject, s.opts.ClientID, []string{oidc.ScopeOpenID, oidc.ScopeEmail, oidc.ScopeProfile})
}

func (s *storage) SetIntrospectionFromToken(ctx context.Context, r *oidc.IntrospectionResponse, tokenID, subject, clientID string) error {
	return errUnsupported
}

func (s *storage) GetPrivateClaimsFromScopes(ctx context.Context, userID, clientID string, scopes []string) (map[string]any, error) {
	return nil, nil
}

// Unused by the device grant.

func (s *storage) TokenRequestByRefreshToken(context.Context, string) (op.RefreshTokenRequest, error) {
	return nil, op.ErrInvalidRefreshToken
}
func (s *storage) TerminateSession(context.Context, string, string) error { return nil }
func (s *storage) RevokeToken(context.Context, string, string, string) *oidc.Error {
	return oidc.ErrUnsupportedGrantType()
}
func (s *storage) GetRefreshTokenInfo(context.Context, string, string) (string, string, error) {
	return "", "", op.ErrInvalidRefreshToken
}
func (s *storage) GetKeyByIDAndClientID(context.Context, string, string) (*jose.JSONWebKey, error) {
	return nil, errUnsupported
}
func (s *storage) ValidateJWTProfileScopes(context.Context, string, []string) ([]string, error) {
	return nil, errUnsupported
}

type signingKey struct{ k *rsa.PrivateKey }

func (k signingKey) SignatureAlgorithm() jose.SignatureAlgorithm { return jose.RS256 }
func (k signingKey) Key() any                                    { return k.k }
func (k signingKey) ID() string                                  { return keyID }

type publicKey struct{ k *rsa.PublicKey }

func (k publicKey) ID() string                         { return keyID }
func (k publicKey) Algorithm() jose.SignatureAlgorithm { return jose.RS256 }
func (k publicKey) Use() string                        { return "sig" }
func (k publicKey) Key() any                           { return k.k }

// client is control: a public native client allowed the device grant.
type client struct {
	id        string
	lifetime  time.Duration
	redirects []string
}

func (c client) GetID() string                       { return c.id }
func (c client) RedirectURIs() []string              { return c.redirects }
func (c client) PostLogoutRedirectURIs() []string    { return nil }
func (c client) ApplicationType() op.ApplicationType { return op.ApplicationTypeNative }
func (c client) AuthMethod() oidc.AuthMethod         { return oidc.AuthMethodNone }
func (c client) ResponseTypes() []oidc.ResponseType {
	return []oidc.ResponseType{oidc.ResponseTypeCode}
}
func (c client) GrantTypes() []oidc.GrantType {
	return []oidc.GrantType{oidc.GrantTypeDeviceCode, oidc.GrantTypeCode}
}
func (c client) LoginURL(id string) string            { return "/login?id=" + id }
func (c client) AccessTokenType() op.AccessTokenType  { return op.AccessTokenTypeBearer }
func (c client) IDTokenLifetime() time.Duration       { return c.lifetime }
func (c client) DevMode() bool                        { return true }
func (c client) IsScopeAllowed(scope string) bool     { return scope == "groups" }
func (c client) IDTokenUserinfoClaimsAssertion() bool { return true }
func (c client) ClockSkew() time.Duration             { return 0 }
func (c client) RestrictAdditionalIdTokenScopes() func([]string) []string {
	return func(s []string) []string { return s }
}
func (c client) RestrictAdditionalAccessTokenScopes() func([]string) []string {
	return func(s []string) []string { return s }
}
