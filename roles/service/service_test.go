package service

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"
)

var update = flag.Bool("update", os.Getenv("MESHD_UPDATE_GOLDEN") != "", "rewrite golden files")

// golden compares got with testdata/NAME.service (MESHD_UPDATE_GOLDEN=1
// rewrites it).
func golden(t *testing.T, got string) {
	t.Helper()
	path := filepath.Join("testdata", strings.ReplaceAll(t.Name(), "/", "_")+".service")
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (MESHD_UPDATE_GOLDEN=1 creates it)", err)
	}
	if string(want) != got {
		t.Fatalf("%s differs (MESHD_UPDATE_GOLDEN=1 rewrites it):\n--- want\n%s\n--- got\n%s", path, want, got)
	}
}

func TestUnit(t *testing.T) {
	for _, tc := range []struct {
		name string
		spec UnitSpec
		// want are lines the unit must have, checked apart from the golden
		// file so that a blind regeneration cannot drop them.
		want []string
	}{
		{"agent", UnitSpec{Exe: "/usr/local/bin/meshd", Role: "agent", Args: []string{"--join", "meshd1_abc", "--port", "51820"}},
			[]string{"EnvironmentFile=/etc/meshd/meshd-agent.env", "ExecStart=/usr/local/bin/meshd agent --port 51820", "Restart=on-failure", "WantedBy=multi-user.target"}},
		{"agent_user", UnitSpec{Exe: "/usr/local/bin/meshd", Role: "agent", User: "meshd", Args: []string{"--socket=/run/meshd/meshd.sock"}},
			[]string{"AmbientCapabilities=CAP_NET_ADMIN CAP_NET_BIND_SERVICE", "StateDirectory=meshd-agent",
				"RuntimeDirectory=meshd", "ReadWritePaths=-/var/lib/meshd-agent -/run/meshd", "User=meshd"}},
		{"agent_user_default_socket", UnitSpec{Exe: "/usr/local/bin/meshd", Role: "agent", User: "meshd"},
			[]string{"ExecStart=/usr/local/bin/meshd agent --socket=/run/meshd/meshd.sock", "RuntimeDirectory=meshd",
				"ReadWritePaths=-/var/lib/meshd-agent -/run/meshd"}},
		{"all_user", UnitSpec{Exe: "/usr/local/bin/meshd", Role: "all", User: "meshd",
			Args: []string{"--data", "/srv/mesh data", "--public-url", "https://vpn.example.org:443", "--listen", ":443"}},
			[]string{`ExecStart=/usr/local/bin/meshd all --data "/srv/mesh data" --public-url https://vpn.example.org:443 --listen :443`,
				"AmbientCapabilities=CAP_NET_BIND_SERVICE", "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
				"ProtectSystem=strict", `ReadWritePaths="-/srv/mesh data"`}},
		{"control_specifiers", UnitSpec{Exe: "/opt/meshd", Role: "control", Args: []string{"--public-url", "https://h:1/%i$x"}},
			[]string{"ExecStart=/opt/meshd control --public-url https://h:1/%%i$$x"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u, err := Unit(tc.spec)
			if err != nil {
				t.Fatal(err)
			}
			for _, l := range tc.want {
				if !strings.Contains(u, "\n"+l+"\n") {
					t.Errorf("unit lacks %q:\n%s", l, u)
				}
			}
			if strings.Contains(u, "meshd1_") {
				t.Errorf("a secret stands in the unit (systemctl show prints it to anyone):\n%s", u)
			}
			golden(t, u)
		})
	}
	if _, err := Unit(UnitSpec{Exe: "/m", Role: "agnet"}); err == nil || !strings.Contains(err.Error(), "agent, all") {
		t.Fatalf("unknown role: %v", err)
	}
}

// runService runs `meshd service ARGS...` with o and returns stdout and the
// error.
func runService(o Options, args ...string) (string, error) {
	var out bytes.Buffer
	app := &cli.App{Name: "meshd", Writer: &out, ErrWriter: &out, Commands: []*cli.Command{NewCommand(o)},
		ExitErrHandler: func(*cli.Context, error) {}}
	err := app.Run(append([]string{"meshd", "service"}, args...))
	return out.String(), err
}

func TestInstallDryRunChangesNothing(t *testing.T) {
	dir := t.TempDir()
	var calls []string
	o := Options{UnitDir: dir, Exe: "/usr/local/bin/meshd", HasSystemd: func() bool { return true },
		Systemctl: func(_ context.Context, a ...string) error { calls = append(calls, strings.Join(a, " ")); return nil }}
	out, err := runService(o, "install", "--dry-run", "--", "all", "--data", "/var/lib/meshd")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "ExecStart=/usr/local/bin/meshd all --data /var/lib/meshd\n") ||
		!strings.Contains(out, filepath.Join(dir, "meshd-all.service")) {
		t.Fatalf("dry run:\n%s", out)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 || len(calls) != 0 {
		t.Fatalf("dry run wrote %v, ran %v", ents, calls)
	}
}

func TestInstallAndUninstall(t *testing.T) {
	dir, envDir := t.TempDir(), filepath.Join(t.TempDir(), "etc-meshd")
	var calls []string
	o := Options{UnitDir: dir, EnvDir: envDir, Exe: "/usr/local/bin/meshd", HasSystemd: func() bool { return true },
		Systemctl: func(_ context.Context, a ...string) error { calls = append(calls, strings.Join(a, " ")); return nil }}
	if _, err := runService(o, "install", "agent", "--join", "meshd1_secret"); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "meshd-agent.service")
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(path)
	if fi.Mode().Perm() != 0o644 || strings.Contains(string(b), "meshd1_secret") ||
		!strings.Contains(string(b), "ExecStart=/usr/local/bin/meshd agent\n") ||
		!strings.Contains(string(b), "EnvironmentFile="+filepath.Join(envDir, "meshd-agent.env")+"\n") {
		t.Fatalf("unit (mode %v) must name the environment file and hold no secret:\n%s", fi.Mode().Perm(), b)
	}
	envFile := filepath.Join(envDir, "meshd-agent.env")
	if fi, err := os.Stat(envFile); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("environment file: %v, mode %v; want 0600", err, fi)
	}
	if e, _ := os.ReadFile(envFile); string(e) != "MESHD_JOIN=\"meshd1_secret\"\n" {
		t.Fatalf("environment file holds %q", e)
	}
	if got, want := strings.Join(calls, "; "), "daemon-reload; enable --now meshd-agent.service"; got != want {
		t.Fatalf("systemctl calls %q, want %q", got, want)
	}
	if _, err := runService(o, "install", "agent"); err == nil || !strings.Contains(err.Error(), "--force") {
		t.Fatalf("installing over an existing unit: %v", err)
	}
	if _, err := runService(o, "install", "--force", "agent"); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o644 {
		t.Fatalf("replaced unit without secrets has mode %v", fi.Mode().Perm())
	}
	calls = nil
	if _, err := runService(o, "uninstall"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("unit left after uninstall: %v", err)
	}
	if _, err := os.Stat(filepath.Join(envDir, "meshd-agent.env")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("environment file left after uninstall: %v", err)
	}
	if got, want := strings.Join(calls, "; "), "disable --now meshd-agent.service; daemon-reload"; got != want {
		t.Fatalf("systemctl calls %q, want %q", got, want)
	}
}

func TestInstallWithoutSystemd(t *testing.T) {
	dir := t.TempDir()
	o := Options{UnitDir: dir, Exe: "/usr/local/bin/meshd", HasSystemd: func() bool { return false },
		Systemctl: func(context.Context, ...string) error { t.Fatal("systemctl run without systemd"); return nil }}
	_, err := runService(o, "install", "relay")
	if err == nil || !strings.Contains(err.Error(), "systemd does not run this machine") || !strings.Contains(err.Error(), "--dry-run") {
		t.Fatalf("err = %v", err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Fatalf("wrote %v without systemd", ents)
	}
}
