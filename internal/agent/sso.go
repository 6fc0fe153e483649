package agent

import (
	"context"
	"errors"
	"fmt"

	"go.uber.org/zap"
	"google.golang.org/protobuf/types/known/timestamppb"

	controlv1 "meshd/api/control/v1"
	daemonv1 "meshd/api/daemon/v1"
	"meshd/internal/controlclient"
)

// ssoKey stands for "log in by single sign-on" where the engine keeps the
// setup key of the next login. It is never sent: control trims keys, and
// a NUL never comes from a command line.
const ssoKey = "\x00sso"

// ssoControl is a control client that can log in by single sign-on.
type ssoControl interface {
	LoginSSO(ctx context.Context, browser bool, prompt func(controlclient.SSOPrompt)) (*controlv1.SelfConfig, error)
}

// UpSSO starts the tunnel with a single sign-on login (`meshd up --sso`):
// the person approves in a browser; Status shows where while it waits.
// With browser, the login is made for a browser on this machine (the
// authorization code flow with PKCE).
func (e *Engine) UpSSO(ctx context.Context, browser bool) error {
	e.mu.Lock()
	e.ssoBrowser = browser
	e.mu.Unlock()
	return e.Up(ctx, ssoKey)
}

// ssoWanted reports whether the next login is by single sign-on (not yet
// done: a restart after it logs in with the key alone).
func (e *Engine) ssoWanted() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.pending == ssoKey
}

// ssoLoginStatus is what the person must do while a login waits.
func (e *Engine) ssoLoginStatus() *daemonv1.SSOLogin {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.ssoPrompt
}

// loginSSO logs in through control's identity provider, showing the URL
// and code in the log and in Status until the login ends.
func (t *tunnel) loginSSO(ctx context.Context, ctl Control) (*controlv1.SelfConfig, error) {
	e := t.e
	sc, ok := ctl.(ssoControl)
	if !ok {
		return nil, fmt.Errorf("%w: this control client cannot log in by SSO", ErrRefused)
	}
	defer func() {
		e.mu.Lock()
		e.ssoPrompt = nil
		e.mu.Unlock()
	}()
	e.mu.Lock()
	browser := e.ssoBrowser || e.opts.SSOBrowser
	e.mu.Unlock()
	self, err := sc.LoginSSO(ctx, browser, func(p controlclient.SSOPrompt) {
		e.mu.Lock()
		e.ssoPrompt = &daemonv1.SSOLogin{Url: p.URL, Code: p.Code, UrlComplete: p.URLComplete, Expires: timestamppb.New(p.Expires)}
		e.mu.Unlock()
		msg := fmt.Sprintf("to log in, open %s and enter %s", p.URL, p.Code)
		if p.Code == "" {
			msg = fmt.Sprintf("to log in, open %s in a browser on this machine", p.URL)
		}
		t.setPhase("connecting", msg)
		t.log.Warn(msg, zap.Time("expires", p.Expires)) // warn: shown at the default log level
	})
	if err != nil {
		var re *refusalError
		if !errors.As(err, &re) && !errors.Is(err, ErrRefused) {
			err = controlError(err)
		}
		return nil, err
	}
	return self, nil
}

// LoginSSO logs in by single sign-on through control.
func (r *realControl) LoginSSO(ctx context.Context, browser bool, prompt func(controlclient.SSOPrompt)) (*controlv1.SelfConfig, error) {
	self, err := r.c.LoginSSOWith(ctx, browser, prompt)
	if err != nil {
		r.mu.Lock()
		r.lastErr = err
		r.mu.Unlock()
		return nil, controlError(err)
	}
	return self, nil
}
