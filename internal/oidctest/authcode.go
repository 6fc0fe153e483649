package oidctest

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"time"

	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"
)

// The authorization code flow with PKCE: the provider's login page is
// /login?id=ID, where the "person in the browser" is whoever BrowserLogin
// named; it approves at once and sends the browser back through op's
// callback to the client's redirect URI.

// authRequest is one authorization request (op.AuthRequest).
type authRequest struct {
	id      string
	req     oidc.AuthRequest
	subject string
	done    bool
	code    string
	at      time.Time
}

var _ op.AuthRequest = (*authRequest)(nil)

func (a *authRequest) GetID() string                      { return a.id }
func (a *authRequest) GetACR() string                     { return "" }
func (a *authRequest) GetAMR() []string                   { return []string{"pwd"} }
func (a *authRequest) GetAudience() []string              { return []string{a.req.ClientID} }
func (a *authRequest) GetAuthTime() time.Time             { return a.at }
func (a *authRequest) GetClientID() string                { return a.req.ClientID }
func (a *authRequest) GetNonce() string                   { return a.req.Nonce }
func (a *authRequest) GetRedirectURI() string             { return a.req.RedirectURI }
func (a *authRequest) GetResponseType() oidc.ResponseType { return a.req.ResponseType }
func (a *authRequest) GetResponseMode() oidc.ResponseMode { return a.req.ResponseMode }
func (a *authRequest) GetScopes() []string                { return a.req.Scopes }
func (a *authRequest) GetState() string                   { return a.req.State }
func (a *authRequest) GetSubject() string                 { return a.subject }
func (a *authRequest) Done() bool                         { return a.done }
func (a *authRequest) GetCodeChallenge() *oidc.CodeChallenge {
	if a.req.CodeChallenge == "" {
		return nil
	}
	return &oidc.CodeChallenge{Challenge: a.req.CodeChallenge, Method: a.req.CodeChallengeMethod}
}

// BrowserLogin sets who logs in at the provider's login page from now on.
func (p *Provider) BrowserLogin(subject string) {
	p.st.mu.Lock()
	defer p.st.mu.Unlock()
	p.st.browserSubject = subject
}

// loginPage plays the person at the provider's login page.
func (p *Provider) loginPage(w http.ResponseWriter, r *http.Request) {
	id := r.URL.Query().Get("id")
	s := p.st
	s.mu.Lock()
	a := s.authReqs[id]
	_, known := s.people[s.browserSubject]
	if a != nil && known {
		a.subject, a.done, a.at = s.browserSubject, true, time.Now()
	}
	s.mu.Unlock()
	if a == nil || !known {
		http.Error(w, "no such login, or nobody logs in (BrowserLogin)", http.StatusForbidden)
		return
	}
	http.Redirect(w, r, p.Issuer+"/authorize/callback?id="+url.QueryEscape(id), http.StatusFound)
}

func (s *storage) CreateAuthRequest(ctx context.Context, req *oidc.AuthRequest, userID string) (op.AuthRequest, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	a := &authRequest{id: rand16(), req: *req}
	s.authReqs[a.id] = a
	return a, nil
}

func (s *storage) AuthRequestByID(ctx context.Context, id string) (op.AuthRequest, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if a := s.authReqs[id]; a != nil {
		return a, nil
	}
	return nil, errors.New("oidctest: no such auth request")
}

func (s *storage) AuthRequestByCode(ctx context.Context, code string) (op.AuthRequest, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, a := range s.authReqs {
		if a.code == code && code != "" {
			return a, nil
		}
	}
	return nil, errors.New("oidctest: no such code")
}

func (s *storage) SaveAuthCode(ctx context.Context, id, code string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	a := s.authReqs[id]
	if a == nil {
		return errors.New("oidctest: no such auth request")
	}
	a.code = code
	return nil
}

func (s *storage) DeleteAuthRequest(ctx context.Context, id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.authReqs, id)
	return nil
}
