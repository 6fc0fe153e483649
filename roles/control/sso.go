package control

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"

	"github.com/urfave/cli/v2"

	"meshd/internal/control"
)

// ssoFlags turn on single sign-on through an OpenID Connect provider.
func ssoFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "oidc-issuer", Usage: "issuer `URL` of the OpenID Connect provider for single sign-on (people join with `meshd up --sso`); empty: setup keys only"},
		&cli.StringFlag{Name: "oidc-client-id", Usage: "OAuth client `ID` registered at the provider for meshd (device authorization grant allowed)"},
		&cli.StringFlag{Name: "oidc-client-secret", Usage: "client `SECRET`, for a confidential client (prefer --oidc-client-secret-file)"},
		&cli.StringFlag{Name: "oidc-client-secret-file", Usage: "`FILE` holding the client secret"},
		&cli.StringFlag{Name: "oidc-groups-claim", Value: control.DefaultGroupsClaim, Usage: "ID token `CLAIM` listing the person's groups, synced into meshd groups at each login"},
		&cli.StringSliceFlag{Name: "oidc-scopes", Usage: "`SCOPES` to ask for (repeatable); default openid, profile, email"},
	}
}

// oidcFromFlags reads ssoFlags.
func oidcFromFlags(c *cli.Context) (control.OIDCOptions, error) {
	o := control.OIDCOptions{Issuer: strings.TrimRight(c.String("oidc-issuer"), "/"), ClientID: c.String("oidc-client-id"),
		ClientSecret: c.String("oidc-client-secret"), GroupsClaim: c.String("oidc-groups-claim"), Scopes: c.StringSlice("oidc-scopes")}
	if f := c.String("oidc-client-secret-file"); f != "" {
		if o.ClientSecret != "" {
			return o, errors.New("--oidc-client-secret and --oidc-client-secret-file: give one of them")
		}
		b, err := os.ReadFile(f)
		if err != nil {
			return o, fmt.Errorf("--oidc-client-secret-file: %w", err)
		}
		o.ClientSecret = strings.TrimSpace(string(b))
	}
	if o.Issuer == "" {
		if o.ClientID != "" || o.ClientSecret != "" {
			return o, errors.New("--oidc-client-id given without --oidc-issuer: give the provider's issuer URL too")
		}
		return o, nil
	}
	if u, err := url.Parse(o.Issuer); err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
		return o, fmt.Errorf("--oidc-issuer %q: want the provider's issuer URL, e.g. https://idp.example.org/realms/main", o.Issuer)
	}
	if o.ClientID == "" {
		return o, errors.New("--oidc-issuer needs --oidc-client-id: the client registered at the provider for meshd")
	}
	return o, nil
}
