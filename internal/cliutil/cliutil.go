// Package cliutil holds what every meshd command shares: environment
// variables for flags, the logging flags, the server flags of the roles that
// listen, and a context that ends on SIGINT/SIGTERM. Only main, roles/ and
// internal/daemon import it.
package cliutil

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/urfave/cli/v2"
	"go.uber.org/zap"

	"meshd/internal/logging"
)

// EnvPrefix starts the environment variable of every flag.
const EnvPrefix = "MESHD_"

// EnvName returns the environment variable that sets flag name.
func EnvName(name string) string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// BindEnv gives every flag of every command (recursively) the environment
// variable MESHD_<FLAG>, so `--tls-pin` can also be set as MESHD_TLS_PIN.
func BindEnv(flags []cli.Flag, cmds []*cli.Command) {
	for _, f := range flags {
		bindFlag(f)
	}
	for _, c := range cmds {
		BindEnv(c.Flags, c.Subcommands)
	}
}

func bindFlag(f cli.Flag) {
	name := f.Names()[0]
	env := []string{EnvName(name)}
	switch f := f.(type) {
	case *cli.StringFlag:
		f.EnvVars = env
	case *cli.BoolFlag:
		f.EnvVars = env
	case *cli.IntFlag:
		f.EnvVars = env
	case *cli.Int64Flag:
		f.EnvVars = env
	case *cli.UintFlag:
		f.EnvVars = env
	case *cli.DurationFlag:
		f.EnvVars = env
	case *cli.StringSliceFlag:
		f.EnvVars = env
	case *cli.PathFlag:
		f.EnvVars = env
	case *cli.Float64Flag:
		f.EnvVars = env
	default:
		panic(fmt.Sprintf("cliutil: flag --%s of type %T has no env binding; add the type here", name, f))
	}
}

// LogFlags are the logging flags every long-running command takes.
func LogFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "log-level", Value: "info", Usage: "debug, info, warn or error"},
		&cli.StringFlag{Name: "log-format", Value: "console", Usage: "console or json"},
	}
}

// Logger builds the logger from the logging flags.
func Logger(c *cli.Context) (*zap.Logger, error) {
	return logging.New(c.String("log-level"), c.String("log-format"))
}

// SignalContext returns a context that ends on SIGINT or SIGTERM.
func SignalContext(parent context.Context) (context.Context, context.CancelFunc) {
	return signal.NotifyContext(parent, os.Interrupt, syscall.SIGTERM)
}

// Exit wraps err so that the command exits with code; the message is
// printed once by main.
func Exit(code int, format string, args ...any) error {
	return cli.Exit(fmt.Sprintf(format, args...), code)
}
