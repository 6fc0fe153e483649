package service

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"

	"meshd/internal/cliutil"
)

// roles are the commands a unit may run, with what the unit says they are.
var roles = map[string]string{
	"agent":   "meshd agent (joins this machine to the mesh)",
	"all":     "meshd server (control, signal and relay)",
	"control": "meshd control",
	"signal":  "meshd signal",
	"relay":   "meshd relay (STUN and TURN)",
}

// UnitSpec is what a unit runs and as whom.
type UnitSpec struct {
	// Exe is the absolute path of the meshd binary.
	Exe string
	// Role is the command: agent, all, control, signal or relay.
	Role string
	// Args are the role's flags, as given.
	Args []string
	// User runs the service as a dedicated user with only the capabilities
	// the role needs; empty: root.
	User string
}

// secretFlags carry secrets (a setup key, a TURN secret): a unit that has
// one in its ExecStart is written readable by root only.
var secretFlags = []string{"join", "setup-key", "turn-secret", "token"}

// HasSecret reports whether args give a flag that carries a secret.
func HasSecret(args []string) bool {
	for _, f := range secretFlags {
		if flagValue(args, f, "") != "" {
			return true
		}
	}
	return false
}

// UnitName is the file name of the unit: meshd-ROLE.service.
func UnitName(role string) string { return "meshd-" + role + ".service" }

// Unit returns the text of the systemd unit.
func Unit(s UnitSpec) (string, error) {
	desc, ok := roles[s.Role]
	if !ok {
		names := make([]string, 0, len(roles))
		for r := range roles {
			names = append(names, r)
		}
		slices.Sort(names)
		return "", fmt.Errorf("service: unknown role %q: want one of %s", s.Role, strings.Join(names, ", "))
	}
	if !filepath.IsAbs(s.Exe) {
		return "", fmt.Errorf("service: the binary's path %q is not absolute", s.Exe)
	}
	var b strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&b, format+"\n", a...) }
	w("# Written by `meshd service install`; `meshd service uninstall %s` removes it.", s.Role)
	w("[Unit]")
	w("Description=%s", desc)
	w("After=network-online.target")
	w("Wants=network-online.target")
	w("")
	w("[Service]")
	w("Type=simple")
	w("ExecStart=%s", execLine(append([]string{s.Exe, s.Role}, s.Args...)))
	w("Restart=on-failure")
	w("RestartSec=5s")
	w("LimitNOFILE=65536")
	if s.User != "" {
		dedicatedUser(w, s)
	}
	w("")
	w("[Install]")
	w("WantedBy=multi-user.target")
	return b.String(), nil
}

// dedicatedUser writes the lines that run the role as s.User: the
// capabilities it needs (binding ports below 1024 — the agent's resolver on
// port 53, a server on 443 —, and for the agent, the interface, routes and
// firewall), a read-only system, and the directories it writes.
func dedicatedUser(w func(string, ...any), s UnitSpec) {
	caps := "CAP_NET_BIND_SERVICE"
	var dirs []string
	if s.Role == "agent" {
		caps = "CAP_NET_ADMIN CAP_NET_BIND_SERVICE"
		dirs = append(dirs, flagValue(s.Args, "state", cliutil.DefaultAgentState),
			filepath.Dir(flagValue(s.Args, "socket", cliutil.DefaultAgentSocket)))
	} else {
		dirs = append(dirs, flagValue(s.Args, "data", cliutil.DefaultDataDir))
	}
	w("User=%s", s.User)
	w("Group=%s", s.User)
	w("AmbientCapabilities=%s", caps)
	w("CapabilityBoundingSet=%s", caps)
	w("NoNewPrivileges=yes")
	w("ProtectSystem=strict")
	w("ProtectHome=yes")
	w("PrivateTmp=yes")
	// StateDirectory and RuntimeDirectory make directories under /var/lib
	// and /run owned by the user; ReadWritePaths only lifts ProtectSystem
	// for the others, which the user must be able to write already.
	var state []string
	for _, d := range dirs {
		if rest, ok := strings.CutPrefix(filepath.Clean(d), "/var/lib/"); ok && rest != "" {
			state = append(state, rest)
		}
	}
	var runtime []string
	for _, d := range dirs {
		if rest, ok := strings.CutPrefix(filepath.Clean(d), "/run/"); ok && rest != "" {
			runtime = append(runtime, rest)
		}
	}
	if len(state) > 0 {
		w("StateDirectory=%s", strings.Join(state, " "))
		w("StateDirectoryMode=0700")
	}
	if len(runtime) > 0 {
		w("RuntimeDirectory=%s", strings.Join(runtime, " "))
	}
	// "-": a path that does not exist is not an error at start (the role
	// then says which directory it cannot use).
	rw := make([]string, len(dirs))
	for i, d := range dirs {
		rw[i] = "-" + d
	}
	w("ReadWritePaths=%s", execLine(rw))
}

// flagValue returns the value of --name in args ("--name V", "--name=V",
// one dash too), or def.
func flagValue(args []string, name, def string) string {
	v := def
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			break
		}
		n := strings.TrimLeft(a, "-")
		if n == a {
			continue
		}
		if k, val, ok := strings.Cut(n, "="); ok && k == name {
			v = val
		} else if n == name && i+1 < len(args) {
			v = args[i+1]
			i++
		}
	}
	return v
}

// execLine joins a command line as systemd reads it: words with spaces,
// quotes or backslashes quoted, and "%" and "$" doubled so that systemd
// does not expand them.
func execLine(words []string) string {
	out := make([]string, len(words))
	for i, w := range words {
		w = strings.ReplaceAll(w, "%", "%%")
		w = strings.ReplaceAll(w, "$", "$$")
		if w == "" || strings.ContainsAny(w, " \t\n\"'\\;") {
			r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`, "\t", `\t`)
			w = `"` + r.Replace(w) + `"`
		}
		out[i] = w
	}
	return strings.Join(out, " ")
}
