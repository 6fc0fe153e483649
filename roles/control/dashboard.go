package control

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"

	"github.com/urfave/cli/v2"
	"go.uber.org/zap"

	"meshd/internal/control"
	"meshd/internal/dashboard"
	"meshd/internal/server"
)

// DefaultDashboardListen is the dashboard's port: the usual alternative
// HTTPS port, so that https://HOST:8443/ is what an admin tries first.
const DefaultDashboardListen = ":8443"

// DashboardFlag is --dashboard-listen, shared by `meshd control` and `meshd all`.
func DashboardFlag() cli.Flag {
	return &cli.StringFlag{Name: "dashboard-listen", Value: DefaultDashboardListen,
		Usage: "`HOST:PORT` of the web dashboard (same TLS as --listen; sign in with an admin token); \"off\": none"}
}

// StartDashboard serves the web dashboard of svc on --dashboard-listen
// until ctx ends; the returned channel yields Serve's result. A dashboard
// that cannot bind its default port is left out with a warning (the mesh
// does not need it); one whose port was given fails.
func StartDashboard(ctx context.Context, c *cli.Context, svc *control.Service, tlsConfig *tls.Config, publicURL string, log *zap.Logger, w io.Writer) (<-chan error, error) {
	addr := c.String("dashboard-listen")
	done := make(chan error, 1)
	if addr == "" || addr == "off" {
		done <- nil
		return done, nil
	}
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return nil, fmt.Errorf("--dashboard-listen %q: want HOST:PORT (e.g. :8443) or off", addr)
	}
	_, h := svc.AdminHandler()
	opts := dashboard.Options{Admin: h, Log: log.Named("dashboard"), PlainHTTP: tlsConfig == nil}
	if svc.SSOConfigured() {
		opts.SSO = svc
	}
	d, err := dashboard.New(opts)
	if err != nil {
		return nil, err
	}
	srv := server.New(log.Named("dashboard"), tlsConfig)
	srv.Handle("/", d)
	ln, err := srv.Listen(addr)
	if err != nil {
		if !c.IsSet("dashboard-listen") {
			log.Warn("no dashboard: its default port is taken; pick one with --dashboard-listen HOST:PORT", zap.Error(err))
			done <- nil
			return done, nil
		}
		return nil, fmt.Errorf("dashboard: %w (is another process on that port? pick one with --dashboard-listen, or off)", err)
	}
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	if u, err := url.Parse(publicURL); err == nil && u.Hostname() != "" {
		scheme := "https"
		if tlsConfig == nil {
			scheme = "http"
		}
		fmt.Fprintf(w, "Dashboard: %s://%s/ (sign in with an admin token)\n", scheme, net.JoinHostPort(u.Hostname(), port))
	}
	go func() {
		err := srv.Serve(ctx, ln)
		if errors.Is(err, net.ErrClosed) {
			err = nil
		}
		done <- err
	}()
	return done, nil
}
