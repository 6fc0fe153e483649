package agent

import (
	"context"
	"encoding/json"
	"time"

	"connectrpc.com/connect"
	"github.com/urfave/cli/v2"

	daemonv1 "meshd/api/daemon/v1"
	"meshd/internal/cliutil"
	"meshd/internal/daemon"
	"meshd/nat/netcheck"
)

// NetcheckCommand is `meshd netcheck`: it runs in the CLI process, not in
// the agent, so that it works while the agent is down or not yet joined.
func NetcheckCommand() *cli.Command {
	return &cli.Command{
		Name:  "netcheck",
		Usage: "measure this network: UDP, public addresses, NAT kind, port mapping, relay latency",
		Description: "Asks each relay's STUN server from this machine. Without --relay-url it takes the relays\n" +
			"of the network map from the running agent (--socket). The agent need not be up for\n" +
			"--relay-url. \"Mapping varies by destination\" (a symmetric NAT) needs two STUN servers.",
		Flags: []cli.Flag{
			&cli.StringSliceFlag{Name: "relay-url", Usage: "STUN server `URL` to ask (stun:HOST:PORT, turn:HOST:PORT or HOST:PORT; repeatable)"},
			&cli.DurationFlag{Name: "timeout", Value: netcheck.DefaultTimeout, Usage: "give up on what has not answered after `DURATION`"},
			&cli.BoolFlag{Name: "json", Usage: "print JSON (field names are stable, for scripts)"},
			socketFlag(),
		},
		Action: func(c *cli.Context) error {
			urls := c.StringSlice("relay-url")
			if len(urls) == 0 {
				path := c.String("socket")
				ctx, cancel := context.WithTimeout(c.Context, 5*time.Second)
				resp, err := daemon.Client(path).Status(ctx, connect.NewRequest(&daemonv1.StatusRequest{}))
				cancel()
				if err != nil {
					return cliutil.Exit(1, "no relay to ask: pass --relay-url stun:HOST:PORT (%v)", daemon.Explain(path, err))
				}
				urls = resp.Msg.GetStunServers()
				if len(urls) == 0 {
					return cliutil.Exit(1, "the agent knows no relay yet (state %s): pass --relay-url stun:HOST:PORT", resp.Msg.GetState())
				}
			}
			r, err := netcheck.Run(c.Context, netcheck.Options{STUN: urls, Timeout: c.Duration("timeout")})
			if err != nil {
				return cliutil.Exit(1, "%v", err)
			}
			if c.Bool("json") {
				enc := json.NewEncoder(c.App.Writer)
				enc.SetIndent("", "  ")
				return enc.Encode(r)
			}
			return r.WriteText(c.App.Writer)
		},
	}
}
