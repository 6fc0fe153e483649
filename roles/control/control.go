// Package control wires the control role: flags to configuration, start, stop.
package control

import (
	"errors"

	"github.com/urfave/cli/v2"
)

// Command is `meshd control`.
func Command() *cli.Command {
	return &cli.Command{
		Name:  "control",
		Usage: "run the control role",
		Action: func(*cli.Context) error {
			return errors.New("control: not built yet")
		},
	}
}
