package control

// Single sign-on for a web page served next to control (the dashboard):
// the authorization code flow with PKCE, where control's callback does not
// exchange the code but sends the browser on to the page's returnTo with
// it. The page finishes the login only for the browser that carries the
// cookie it set when it started the login, so a login link sent to someone
// else gives its sender nothing: the code goes to the other person's
// browser, which has no such cookie.

import (
	"context"
	"errors"
	"net/http"
	"net/url"

	"connectrpc.com/connect"
	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"
)

// SSOConfigured says whether control has single sign-on (--oidc-issuer).
func (s *Service) SSOConfigured() bool { return s.sso != nil }

// StartWebLogin begins an admin's browser login: it returns the provider's
// URL to send the browser to and the login's state, which the page keeps
// in a cookie of that browser. After the provider, control's callback
// sends the browser to returnTo with the code and state in its query. src
// is the browser's address (for the per-address bound on pending logins).
func (s *Service) StartWebLogin(ctx context.Context, returnTo, src string) (authURL, state string, err error) {
	if s.sso == nil {
		return "", "", errSSONotConfigured
	}
	if _, err := url.Parse(returnTo); err != nil || returnTo == "" {
		return "", "", connect.NewError(connect.CodeInvalidArgument, errors.New("web login: bad return URL"))
	}
	res, err := s.sso.startBrowser(ctx, s.opts.PublicURL, "", loginSource(src))
	if err != nil {
		return "", "", err
	}
	c := s.sso
	c.mu.Lock()
	pl := c.logins[res.Handle]
	if pl != nil {
		pl.browser.started, pl.browser.returnTo = true, returnTo
	}
	c.mu.Unlock()
	p, err := c.discover(ctx)
	if err != nil || pl == nil {
		return "", "", refuseSSOUnreachable.err("")
	}
	cfg := c.config(p)
	cfg.RedirectURL = s.opts.PublicURL + ssoCallbackPath
	return cfg.AuthCodeURL(res.Handle, oauth2.S256ChallengeOption(pl.browser.verifier), oidc.Nonce(pl.browser.nonce)), res.Handle, nil
}

// FinishWebLogin exchanges the code the provider gave the browser of the
// login state (perr: the provider's error instead) and returns an admin
// session token for the person and how to name them. The caller has
// checked that the browser is the one that started the login.
func (s *Service) FinishWebLogin(ctx context.Context, state, code, perr string) (token, user string, err error) {
	if s.sso == nil {
		return "", "", errSSONotConfigured
	}
	c := s.sso
	c.mu.Lock()
	pl := c.logins[state]
	ok := pl != nil && pl.browser != nil && pl.browser.returnTo != "" && !pl.done
	if ok {
		pl.done = true // one try per login
		delete(c.logins, state)
	}
	c.mu.Unlock()
	if !ok {
		return "", "", refuseSSOUnknown.err("")
	}
	id, err := c.exchange(ctx, s.opts.PublicURL+ssoCallbackPath, code, perr, pl.browser)
	if err != nil {
		return "", "", err
	}
	accts := s.accountList()
	if len(accts) == 0 {
		return "", "", connect.NewError(connect.CodeFailedPrecondition, errors.New("control has no account yet"))
	}
	res, err := accts[0].adminSession(ctx, id)
	if err != nil {
		return "", "", err
	}
	return res.AdminToken, res.User, nil
}

// webReturn sends the browser of a web login on to its page with the
// provider's answer; false when pl is not a web login.
func webReturn(w http.ResponseWriter, r *http.Request, pl *browserLogin) bool {
	if pl.returnTo == "" {
		return false
	}
	u, err := url.Parse(pl.returnTo)
	if err != nil {
		return false
	}
	q := url.Values{}
	for _, k := range []string{"code", "state", "error"} {
		if v := r.URL.Query().Get(k); v != "" {
			q.Set(k, v)
		}
	}
	u.RawQuery = q.Encode()
	http.Redirect(w, r, u.String(), http.StatusFound)
	return true
}
