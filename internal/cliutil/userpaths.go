package cliutil

import (
	"os"
	"path/filepath"
	"strconv"
)

// AgentStateFor is the agent's default --state for the user running it:
// DefaultAgentState for root; for anyone else, who cannot write /var/lib,
// $XDG_STATE_HOME/meshd-agent or ~/.local/state/meshd-agent (a rootless
// agent in netstack mode needs nothing else of the machine).
func AgentStateFor(euid int) string {
	if euid == 0 {
		return DefaultAgentState
	}
	if d := os.Getenv("XDG_STATE_HOME"); filepath.IsAbs(d) {
		return filepath.Join(d, "meshd-agent")
	}
	if h, err := os.UserHomeDir(); err == nil && h != "" {
		return filepath.Join(h, ".local", "state", "meshd-agent")
	}
	return filepath.Join(os.TempDir(), "meshd-agent-"+strconv.Itoa(euid))
}

// AgentSocketFor is the agent's default --socket for the user running it:
// DefaultAgentSocket for root; for anyone else $XDG_RUNTIME_DIR/meshd.sock,
// or meshd.sock in AgentStateFor(euid). The agent and the CLI (meshd
// status, up, down) agree on it when run by the same user.
func AgentSocketFor(euid int) string {
	if euid == 0 {
		return DefaultAgentSocket
	}
	if d := os.Getenv("XDG_RUNTIME_DIR"); filepath.IsAbs(d) {
		return filepath.Join(d, "meshd.sock")
	}
	return filepath.Join(AgentStateFor(euid), "meshd.sock")
}
