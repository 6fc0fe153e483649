// Package admin is `meshd admin`: the command-line client of control's admin API.
package admin

import (
	"errors"

	"github.com/urfave/cli/v2"
)

// Command is `meshd admin`.
func Command() *cli.Command {
	return &cli.Command{
		Name:  "admin",
		Usage: "manage peers, groups, setup keys, policies, routes and DNS",
		Action: func(*cli.Context) error {
			return errors.New("admin: not built yet")
		},
	}
}
