// Command meshd is a self-hosted WireGuard mesh network in one binary. Run
// `meshd all` on a server and `meshd agent` on every machine; see README.md.
package main

import (
	"errors"
	"fmt"
	"io"
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
	"meshd/roles/service"
	"meshd/roles/signal"
)

func main() {
	os.Exit(run(os.Args, os.Stdout, os.Stderr))
}

// run runs meshd with args and returns the exit code: 0, 1 for a failure,
// 2 for a usage error.
func run(args []string, stdout, stderr io.Writer) int {
	app := newApp()
	app.Writer, app.ErrWriter = stdout, stderr
	if err := app.Run(args); err != nil {
		var ec cli.ExitCoder
		if errors.As(err, &ec) {
			if msg := err.Error(); msg != "" {
				fmt.Fprintln(stderr, "meshd:", msg)
			}
			return ec.ExitCode()
		}
		fmt.Fprintln(stderr, "meshd:", err)
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
			agent.PingCommand(),
			agent.NetcheckCommand(),
			admin.Command(),
			service.Command(),
			{
				Name:  "version",
				Usage: "print the version",
				Action: func(c *cli.Context) error {
					fmt.Fprintf(c.App.Writer, "meshd %s %s/%s %s\n", version.String(), runtime.GOOS, runtime.GOARCH, runtime.Version())
					return nil
				},
			},
		},
		// A mistyped subcommand is an error, not a silent help page.
		Action: func(c *cli.Context) error {
			if c.Args().Present() {
				return cli.Exit(fmt.Sprintf("unknown command %q; run `meshd --help` for the list", c.Args().First()), 2)
			}
			return cli.ShowAppHelp(c)
		},
		OnUsageError: usageError,
		// run prints errors and picks the exit code; urfave must not exit.
		ExitErrHandler: func(*cli.Context, error) {},
	}
	cliutil.BindEnv(app.Flags, app.Commands)
	setUsageError(app.Commands)
	return app
}

// usageError turns a bad flag into one line naming the flag and exit code 2,
// instead of a help page that buries the message.
func usageError(c *cli.Context, err error, _ bool) error {
	name := "meshd"
	if c.Command != nil && c.Command.Name != "" && c.Command.Name != c.App.Name {
		name = "meshd " + c.Command.FullName()
	}
	return cli.Exit(fmt.Sprintf("%v (see `%s --help`)", err, name), 2)
}

func setUsageError(cmds []*cli.Command) {
	for _, c := range cmds {
		if c.OnUsageError == nil {
			c.OnUsageError = usageError
		}
		setUsageError(c.Subcommands)
	}
}
