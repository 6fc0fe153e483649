package dns

import (
	"os"
	"os/exec"
)

// resolvedUsable reports whether systemd-resolved runs and may be told
// about the mesh interface from this process: resolvectl exists, resolved's
// runtime directory exists, and this process shares the network namespace
// of PID 1 (resolved names links by index, and an index from another
// namespace would point at the wrong interface).
func resolvedUsable() (bool, string) {
	if _, err := os.Stat("/run/systemd/resolve"); err != nil {
		return false, "systemd-resolved is not running"
	}
	if _, err := exec.LookPath("resolvectl"); err != nil {
		return false, "resolvectl is not installed"
	}
	self, err1 := os.Readlink("/proc/self/ns/net")
	init, err2 := os.Readlink("/proc/1/ns/net")
	if err1 != nil || err2 != nil || self != init {
		return false, "the agent runs in another network namespace than systemd-resolved"
	}
	return true, ""
}

// directUsable reports whether this process may write resolv.conf: only
// from the network namespace of PID 1. An agent in another namespace
// usually shares the host's /etc (ip netns exec bind-mounts its own
// resolv.conf only when /etc/netns/NAME/resolv.conf exists), and the
// host's programs cannot reach a resolver inside the namespace.
func directUsable() (bool, string) {
	self, err1 := os.Readlink("/proc/self/ns/net")
	init, err2 := os.Readlink("/proc/1/ns/net")
	if err1 != nil || err2 != nil || self != init {
		return false, "resolv.conf left alone: the agent runs in another network namespace than the host"
	}
	return true, ""
}
