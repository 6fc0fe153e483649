package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"connectrpc.com/connect"
	"github.com/urfave/cli/v2"

	controlv1 "meshd/api/control/v1"
	"meshd/api/control/v1/controlv1connect"
	"meshd/internal/rpcclient"
	"meshd/internal/tlsconf"
)

// savedSession is what `meshd admin login` keeps: a short-lived admin
// session token of a person, and where it is good.
type savedSession struct {
	Control string    `json:"control"`
	Pin     string    `json:"tls_pin,omitempty"`
	Token   string    `json:"token"`
	User    string    `json:"user"`
	Expires time.Time `json:"expires"`
}

// sessionFile is where the session is kept: the user's config directory
// (MESHD_CONFIG_DIR overrides it), readable by the user alone.
func sessionFile() (string, error) {
	dir := os.Getenv("MESHD_CONFIG_DIR")
	if dir == "" {
		d, err := os.UserConfigDir()
		if err != nil {
			return "", err
		}
		dir = filepath.Join(d, "meshd")
	}
	return filepath.Join(dir, "admin-session.json"), nil
}

// loadSession returns the kept session when it is still good for url (any
// control when url is empty).
func loadSession(url string, now time.Time) *savedSession {
	f, err := sessionFile()
	if err != nil {
		return nil
	}
	b, err := os.ReadFile(f)
	if err != nil {
		return nil
	}
	var s savedSession
	if json.Unmarshal(b, &s) != nil || s.Token == "" || !now.Before(s.Expires) || (url != "" && url != s.Control) {
		return nil
	}
	return &s
}

func saveSession(s savedSession) (string, error) {
	f, err := sessionFile()
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(filepath.Dir(f), 0o700); err != nil {
		return "", err
	}
	b, _ := json.MarshalIndent(s, "", "  ")
	tmp := f + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o600); err != nil {
		return "", err
	}
	return f, os.Rename(tmp, f)
}

// loginCmd is `meshd admin login`: a person logs in through control's
// identity provider (device flow) and later admin commands use the session.
func loginCmd() *cli.Command {
	return &cli.Command{
		Name:  "login",
		Usage: "log in as yourself through control's identity provider (single sign-on); admin commands then need no token",
		UsageText: "meshd admin login --control URL [--tls-pin sha256:HEX]\n\n" +
			"   prints a URL and a code to approve in any browser; keeps a short-lived token in your config directory",
		Action: func(c *cli.Context) error {
			url, pin := flag(c, "control"), flag(c, "tls-pin")
			if url == "" {
				return cli.Exit("meshd admin login: pass --control URL (the address agents use)", 2)
			}
			if pin != "" {
				var err error
				if pin, err = tlsconf.ParsePin(pin); err != nil {
					return cli.Exit(fmt.Sprintf("--tls-pin: %v", err), 2)
				}
			}
			o, _ := c.App.Metadata[metaOptions].(Options)
			hc := o.HTTPClient
			if hc == nil {
				var err error
				if hc, err = rpcclient.New(url, pin); err != nil {
					return cli.Exit(fmt.Sprintf("--control: %v", err), 2)
				}
			}
			ctx := c.Context
			if ctx == nil {
				ctx = context.Background()
			}
			s, err := adminLogin(ctx, hc, url, func(u, code string) {
				fmt.Fprintf(c.App.Writer, "To log in, open %s and enter %s\n", u, code)
			})
			if err != nil {
				return cli.Exit("meshd admin login: "+safe(err.Error()), 1)
			}
			s.Pin = pin
			f, err := saveSession(*s)
			if err != nil {
				return cli.Exit(fmt.Sprintf("meshd admin login: keep the session: %v", err), 1)
			}
			_, err = fmt.Fprintf(c.App.Writer, "logged in as %s until %s (session kept in %s)\n", s.User,
				s.Expires.Local().Format(time.DateTime), f)
			return err
		},
	}
}

// adminLogin runs the device flow through control and returns the session.
func adminLogin(ctx context.Context, hc *http.Client, url string, prompt func(url, code string)) (*savedSession, error) {
	rpc := controlv1connect.NewControlServiceClient(hc, url)
	st, err := rpc.StartSSOLogin(ctx, connect.NewRequest(&controlv1.StartSSOLoginRequest{}))
	if err != nil {
		return nil, connectMessage(err)
	}
	prompt(st.Msg.VerificationUrl, st.Msg.UserCode)
	t := time.NewTicker(time.Duration(max(st.Msg.IntervalSeconds, 1)) * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-t.C:
		}
		fin, err := rpc.FinishSSOLogin(ctx, connect.NewRequest(&controlv1.FinishSSOLoginRequest{Handle: st.Msg.Handle}))
		if err != nil {
			return nil, connectMessage(err)
		}
		if !fin.Msg.Pending {
			return &savedSession{Control: url, Token: fin.Msg.AdminToken, User: fin.Msg.User,
				Expires: fin.Msg.AdminTokenExpires.AsTime()}, nil
		}
	}
}

// connectMessage is control's message of a Connect error.
func connectMessage(err error) error {
	var ce *connect.Error
	if errors.As(err, &ce) {
		return errors.New(ce.Message())
	}
	return err
}
