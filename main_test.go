package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"

	"meshd/internal/cliutil"
)

func runMeshd(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(append([]string{"meshd"}, args...), &out, &errb)
	return code, out.String(), errb.String()
}

func TestHelpListsEveryRole(t *testing.T) {
	code, out, _ := runMeshd(t, "--help")
	if code != 0 {
		t.Fatalf("--help exit %d", code)
	}
	for _, cmd := range []string{"agent", "control", "signal", "relay", "all", "status", "up", "down", "admin", "version"} {
		if !strings.Contains(out, "\n   "+cmd+" ") {
			t.Errorf("--help does not list %q:\n%s", cmd, out)
		}
	}
}

func TestBadFlagNamesTheFlag(t *testing.T) {
	code, _, errOut := runMeshd(t, "version", "--no-such-flag")
	if code != 2 || !strings.Contains(errOut, "no-such-flag") || !strings.Contains(errOut, "meshd version --help") {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	code, _, errOut = runMeshd(t, "no-such-command")
	if code != 2 || !strings.Contains(errOut, `unknown command "no-such-command"`) {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
}

// Every flag of every command can be set from MESHD_<FLAG>.
func TestEveryFlagHasItsEnvVar(t *testing.T) {
	app := newApp()
	var walk func(path string, cmds []*cli.Command)
	n := 0
	walk = func(path string, cmds []*cli.Command) {
		for _, c := range cmds {
			for _, f := range c.Flags {
				name := f.Names()[0]
				if name == "help" {
					continue
				}
				ef, ok := f.(interface{ GetEnvVars() []string })
				if !ok || len(ef.GetEnvVars()) != 1 || ef.GetEnvVars()[0] != cliutil.EnvName(name) {
					t.Errorf("%s --%s: env vars %v, want %s", path+c.Name, name, ef.GetEnvVars(), cliutil.EnvName(name))
				}
				n++
			}
			walk(path+c.Name+" ", c.Subcommands)
		}
	}
	walk("meshd ", app.Commands)
	t.Logf("%d flags checked", n)
}

func TestVersion(t *testing.T) {
	code, out, _ := runMeshd(t, "version")
	if code != 0 || !strings.HasPrefix(out, "meshd ") {
		t.Fatalf("exit %d, out %q", code, out)
	}
}
