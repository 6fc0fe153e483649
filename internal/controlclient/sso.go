package controlclient

import (
	"context"
	"errors"
	"fmt"
	"time"

	"connectrpc.com/connect"

	controlv1 "meshd/api/control/v1"
	"meshd/internal/seal"
)

// SSOPrompt is what the person must do to approve a single sign-on login:
// open URL in any browser and enter Code (URLComplete has the code filled
// in, when the provider gives one).
type SSOPrompt struct {
	URL, URLComplete, Code string
	Expires                time.Time
}

// LoginSSO registers the peer (or logs it in again) for the person who
// approves the login through control's identity provider. prompt hears what
// to show the person, once, before the wait; LoginSSO then asks control
// every few seconds until the person approved, the code expired or ctx
// ends. Refusals wrap ErrSSOFailed or ErrUserBlocked; a server without
// single sign-on answers a plain error saying so.
func (c *Client) LoginSSO(ctx context.Context, prompt func(SSOPrompt)) (*controlv1.SelfConfig, error) {
	return c.LoginSSOWith(ctx, false, prompt)
}

// LoginSSOWith is LoginSSO; with browser, the login uses the authorization
// code flow with PKCE (for a desktop with a browser): the prompt's URL is
// to be opened on this machine and there is no code.
func (c *Client) LoginSSOWith(ctx context.Context, browser bool, prompt func(SSOPrompt)) (*controlv1.SelfConfig, error) {
	// One replica for the whole login: a pending login lives in the memory
	// of the replica that started it.
	rpc, err := c.rpcFor(c.URL())
	if err != nil {
		return nil, err
	}
	res, err := rpc.StartSSOLogin(ctx, connect.NewRequest(&controlv1.StartSSOLoginRequest{PublicKey: c.pub[:], Browser: browser}))
	if err != nil {
		return nil, ssoError(err)
	}
	st := res.Msg
	if prompt != nil {
		prompt(SSOPrompt{URL: st.VerificationUrl, URLComplete: st.VerificationUrlComplete, Code: st.UserCode,
			Expires: st.Expires.AsTime()})
	}
	interval := time.Duration(max(st.IntervalSeconds, 1)) * time.Second
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-t.C:
		}
		proof, err := c.prove(ctx, rpc, seal.PurposeLogin)
		if err != nil {
			return nil, fmt.Errorf("sso login: %w", err)
		}
		fin, err := rpc.FinishSSOLogin(ctx, connect.NewRequest(&controlv1.FinishSSOLoginRequest{Handle: st.Handle,
			Proof: proof, Meta: c.meta}))
		if err != nil {
			return nil, ssoError(err)
		}
		if !fin.Msg.Pending {
			return fin.Msg.Self, nil
		}
	}
}

// ssoError returns control's refusal, or its message when it is one meant
// for the person (SSO not configured), or the error with context.
func ssoError(err error) error {
	if r := refused(err); r != err {
		return r
	}
	var ce *connect.Error
	if errors.As(err, &ce) && ce.Code() == connect.CodeFailedPrecondition {
		// "SSO is not configured on this server: ..."
		return &RefusedError{Reason: controlv1.Reason_REASON_SSO_FAILED, Code: ce.Code(), Message: ce.Message(), err: ErrSSOFailed}
	}
	return fmt.Errorf("sso login: %w", err)
}
