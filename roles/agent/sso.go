package agent

import (
	"context"
	"errors"
	"fmt"
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
		_, err := cl.Up(ctx, connect.NewRequest(&daemonv1.UpRequest{Sso: true}))
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
			if l := st.Msg.GetSelf().GetLogin(); l != nil && l.Code != shown {
				shown = l.Code
				fmt.Fprintf(c.App.Writer, "To log in, open %s and enter %s\n", l.Url, l.Code)
			}
		}
	}
}
