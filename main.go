// Command meshd is a self-hosted WireGuard mesh network in one binary. Run
// `meshd all` on a server and `meshd agent` on every machine; see README.md.
package main

import (
	"errors"
	"fmt"
	"os"
	"runtime"

	"github.com/urfave/cli/v2"

	"meshd/internal/cliutil"
	"meshd/internal/version"
	"meshd/roles/admin"
	"meshd/roles/agent"
	"meshd/roles/all"
	"meshd/roles/control"
	"meshd/roles/relay"
	"meshd/roles/signal"
)

func main() {
	os.Exit(run(os.Args))
}

func run(args []string) int {
	app := newApp()
	if err := app.Run(args); err != nil {
		var ec cli.ExitCoder
		if errors.As(err, &ec) {
			if msg := err.Error(); msg != "" {
				fmt.Fprintln(os.Stderr, "meshd:", msg)
			}
			return ec.ExitCode()
		}
		fmt.Fprintln(os.Stderr, "meshd:", err)
		return 1
	}
	return 0
}

func newApp() *cli.App {
	app := &cli.App{
		Name:                 "meshd",
		Usage:                "a self-hosted WireGuard mesh network in one binary",
		Version:              version.String(),
		EnableBashCompletion: true,
		HideHelpCommand:      true,
		Commands: []*cli.Command{
			all.Command(),
			control.Command(),
			signal.Command(),
			relay.Command(),
			agent.Command(),
			agent.StatusCommand(),
			agent.UpCommand(),
			agent.DownCommand(),
			admin.Command(),
			{
				Name:  "version",
				Usage: "print the version",
				Action: func(*cli.Context) error {
					fmt.Printf("meshd %s %s/%s %s\n", version.String(), runtime.GOOS, runtime.GOARCH, runtime.Version())
					return nil
				},
			},
		},
		// A mistyped subcommand is an error, not a silent help page.
		CommandNotFound: func(c *cli.Context, name string) {
			fmt.Fprintf(os.Stderr, "meshd: unknown command %q; run `meshd --help` for the list\n", name)
			os.Exit(2)
		},
		OnUsageError: func(c *cli.Context, err error, _ bool) error {
			return cli.Exit(fmt.Sprintf("%v (see `meshd %s --help`)", err, c.Command.Name), 2)
		},
	}
	cliutil.BindEnv(app.Flags, app.Commands)
	return app
}
