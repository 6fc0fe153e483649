// Package relay wires the relay role: flags to configuration, start, stop.
package relay

import (
	"errors"

	"github.com/urfave/cli/v2"
)

// Command is `meshd relay`.
func Command() *cli.Command {
	return &cli.Command{
		Name:  "relay",
		Usage: "run the relay role",
		Action: func(*cli.Context) error {
			return errors.New("relay: not built yet")
		},
	}
}
