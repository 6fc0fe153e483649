// Package all wires the all role: flags to configuration, start, stop.
package all

import (
	"errors"

	"github.com/urfave/cli/v2"
)

// Command is `meshd all`.
func Command() *cli.Command {
	return &cli.Command{
		Name:  "all",
		Usage: "run the all role",
		Action: func(*cli.Context) error {
			return errors.New("all: not built yet")
		},
	}
}
