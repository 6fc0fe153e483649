package controltest

import (
	"context"

	"meshd/internal/controlclient"
)

// LoginSSO logs the agent in by single sign-on; approve plays the person in
// the browser with the code control's provider gave (return an error to
// stop). The result is what the login returned.
func (a *Agent) LoginSSO(approve func(code string) error) error {
	ctx, cancel := context.WithTimeout(context.Background(), a.h.cfg.patience)
	defer cancel()
	var aerr error
	self, err := a.Client.LoginSSO(ctx, func(p controlclient.SSOPrompt) {
		if aerr = approve(p.Code); aerr != nil {
			cancel()
		}
	})
	if aerr != nil {
		return aerr
	}
	if err == nil {
		a.Self = self
	}
	return err
}
