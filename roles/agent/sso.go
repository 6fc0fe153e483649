package agent

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"time"

	"connectrpc.com/connect"
	"github.com/urfave/cli/v2"

	daemonv1 "meshd/api/daemon/v1"
	"meshd/internal/cliutil"
	"meshd/internal/daemon"
)

// ssoWait bounds `meshd up --sso`: providers' device codes live a few
// minutes to a quarter of an hour.
const ssoWait = 20 * time.Minute

// upSSO is `meshd up --sso`: it asks the agent for a single sign-on login
// and, while the agent waits, shows the person where to approve it.
func upSSO(c *cli.Context, path string) error {
	if strings.TrimSpace(c.String("setup-key")) != "" {
		return cliutil.Exit(2, "--sso and --setup-key: log in one way")
	}
	ctx, cancel := context.WithTimeout(c.Context, ssoWait)
	defer cancel()
	cl := daemon.Client(path)
	done := make(chan error, 1)
	go func() {
		_, err := cl.Up(ctx, connect.NewRequest(&daemonv1.UpRequest{Sso: true, SsoBrowser: c.Bool("browser")}))
		done <- err
	}()
	shown := ""
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case err := <-done:
			if err != nil {
				var ce *connect.Error
				if errors.As(err, &ce) && ce.Code() == connect.CodeFailedPrecondition {
					return cliutil.Exit(1, "%s", ce.Message())
				}
				return cliutil.Exit(1, "%v", daemon.Explain(path, err))
			}
			fmt.Fprintln(c.App.Writer, "up")
			return nil
		case <-t.C:
			st, err := cl.Status(ctx, connect.NewRequest(&daemonv1.StatusRequest{}))
			if err != nil {
				continue // Up says what went wrong
			}
			if l := st.Msg.GetSelf().GetLogin(); l != nil && l.Url != shown {
				shown = l.Url
				if l.Code == "" {
					fmt.Fprintf(c.App.Writer, "To log in, open %s in a browser on this machine\n", l.Url)
					openBrowser(l.Url)
				} else {
					fmt.Fprintf(c.App.Writer, "To log in, open %s and enter %s\n", l.Url, l.Code)
				}
			}
		}
	}
}

// openBrowser opens url in the desktop's browser when xdg-open is there;
// the URL is printed either way.
func openBrowser(url string) {
	if p, err := exec.LookPath("xdg-open"); err == nil {
		cmd := exec.Command(p, url)
		if cmd.Start() == nil {
			go cmd.Wait() // reap it
		}
	}
}
