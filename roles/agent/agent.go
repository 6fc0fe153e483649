// Package agent wires the agent role and its local clients: `meshd agent`,
// `meshd status`, `meshd up` and `meshd down`.
package agent

import (
	"errors"

	"github.com/urfave/cli/v2"
)

// Command is `meshd agent`.
func Command() *cli.Command {
	return &cli.Command{Name: "agent", Usage: "run on every machine: join the mesh and keep its tunnels",
		Action: func(*cli.Context) error { return errors.New("agent: not built yet") }}
}

// StatusCommand is `meshd status`.
func StatusCommand() *cli.Command {
	return &cli.Command{Name: "status", Usage: "show this machine's peers and paths",
		Action: func(*cli.Context) error { return errors.New("status: not built yet") }}
}

// UpCommand is `meshd up`.
func UpCommand() *cli.Command {
	return &cli.Command{Name: "up", Usage: "start the tunnel",
		Action: func(*cli.Context) error { return errors.New("up: not built yet") }}
}

// DownCommand is `meshd down`.
func DownCommand() *cli.Command {
	return &cli.Command{Name: "down", Usage: "stop the tunnel, keeping this machine's identity",
		Action: func(*cli.Context) error { return errors.New("down: not built yet") }}
}
