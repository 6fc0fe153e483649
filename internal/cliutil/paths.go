package cliutil

// Default paths of the roles, in one place so that commands which write
// units or look for data (meshd service, meshd admin) agree with the roles
// without importing them.
const (
	// DefaultAgentState is the agent's --state: its key and what a restart needs.
	DefaultAgentState = "/var/lib/meshd-agent"
	// DefaultAgentSocket is the agent's local API socket (--socket).
	DefaultAgentSocket = "/var/run/meshd.sock"
	// DefaultDataDir is where `meshd control` and `meshd all` keep their
	// data unless told otherwise; `meshd admin` looks there when given nothing.
	DefaultDataDir = "/var/lib/meshd"
)
