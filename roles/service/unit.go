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
	// EnvDir is where the environment file with the secret flags goes
	// (DefaultEnvDir when empty).
	EnvDir string
}

// UserSocket is the agent's socket when it runs as a dedicated user and
// was given none (`meshd status --socket` must name it too).
const UserSocket = "/run/meshd/meshd.sock"

// DefaultEnvDir holds the environment files of units whose flags carry
// secrets.
const DefaultEnvDir = "/etc/meshd"

// secretFlags carry secrets (a join token, a setup key, a TURN secret).
// They never stand in the unit: `systemctl show` prints ExecStart to every
// user, and the process's command line is world-readable. They go into an
// environment file readable by root only, as MESHD_<FLAG> (every flag of a
// role can be set that way).
var secretFlags = []string{"join", "setup-key", "turn-secret", "token"}

// EnvFile returns the path of the environment file of s and its content
// (MESHD_<FLAG>="value" lines), or "" when s's flags carry no secret.
func EnvFile(s UnitSpec) (path, content string) {
	_, env := splitSecrets(s.Args)
	if len(env) == 0 {
		return "", ""
	}
	return envPath(s.EnvDir, s.Role), strings.Join(env, "\n") + "\n"
}

// envPath is the environment file of role in dir ("": DefaultEnvDir).
func envPath(dir, role string) string {
	if dir == "" {
		dir = DefaultEnvDir
	}
	return filepath.Join(dir, "meshd-"+role+".env")
}

// splitSecrets takes the secret flags out of args ("--name V", "--name=V",
// one dash too, up to "--") and returns them as environment lines.
func splitSecrets(args []string) (rest, env []string) {
	q := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			rest = append(rest, args[i:]...)
			break
		}
		n := strings.TrimLeft(a, "-")
		name, val, inline := strings.Cut(n, "=")
		if n == a || !slices.Contains(secretFlags, name) || (!inline && i+1 >= len(args)) {
			rest = append(rest, a)
			continue
		}
		if !inline {
			i++
			val = args[i]
		}
		env = append(env, cliutil.EnvName(name)+`="`+q.Replace(val)+`"`)
	}
	return rest, env
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
	if s.User != "" && s.Role == "agent" && flagValue(s.Args, "socket", "") == "" {
		// The default socket's directory (/var/run) is root's: a dedicated
		// user's agent gets one of its own under /run (RuntimeDirectory).
		s.Args = append(slices.Clone(s.Args), "--socket="+UserSocket)
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
	args, _ := splitSecrets(s.Args)
	if path, _ := EnvFile(s); path != "" {
		w("EnvironmentFile=%s", path)
	}
	w("ExecStart=%s", execLine(append([]string{s.Exe, s.Role}, args...)))
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
