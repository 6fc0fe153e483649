// Package signal wires the signal role: flags to configuration, start, stop.
package signal

import (
	"errors"

	"github.com/urfave/cli/v2"
)

// Command is `meshd signal`.
func Command() *cli.Command {
	return &cli.Command{
		Name:  "signal",
		Usage: "run the signal role",
		Action: func(*cli.Context) error {
			return errors.New("signal: not built yet")
		},
	}
}
