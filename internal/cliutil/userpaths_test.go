package cliutil

import "testing"

func TestAgentPathsFor(t *testing.T) {
	if got := AgentStateFor(0); got != DefaultAgentState {
		t.Errorf("root state %q", got)
	}
	if got := AgentSocketFor(0); got != DefaultAgentSocket {
		t.Errorf("root socket %q", got)
	}
	t.Setenv("HOME", "/home/ci")
	t.Setenv("XDG_STATE_HOME", "")
	t.Setenv("XDG_RUNTIME_DIR", "")
	if got, want := AgentStateFor(1000), "/home/ci/.local/state/meshd-agent"; got != want {
		t.Errorf("user state %q, want %q", got, want)
	}
	if got, want := AgentSocketFor(1000), "/home/ci/.local/state/meshd-agent/meshd.sock"; got != want {
		t.Errorf("user socket %q, want %q", got, want)
	}
	t.Setenv("XDG_STATE_HOME", "/xdg/state")
	t.Setenv("XDG_RUNTIME_DIR", "/run/user/1000")
	if got, want := AgentStateFor(1000), "/xdg/state/meshd-agent"; got != want {
		t.Errorf("XDG state %q, want %q", got, want)
	}
	if got, want := AgentSocketFor(1000), "/run/user/1000/meshd.sock"; got != want {
		t.Errorf("XDG socket %q, want %q", got, want)
	}
}
