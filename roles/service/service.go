// Package service is `meshd service install|uninstall`: it writes a systemd
// unit that runs a meshd role (the agent, or a server role) with the flags
// given, and enables it, as `netbird service install` does, so that an
// operator does not hand-write units. Only main imports it.
package service

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/urfave/cli/v2"
)

// DefaultUnitDir is where units written by an administrator live.
const DefaultUnitDir = "/etc/systemd/system"

// Options are the command's view of the system (tests replace them).
type Options struct {
	// UnitDir is where the unit goes (DefaultUnitDir).
	UnitDir string
	// EnvDir is where the environment file with secret flags goes
	// (DefaultEnvDir).
	EnvDir string
	// Exe is the meshd binary the unit runs (os.Executable).
	Exe string
	// HasSystemd reports whether systemd runs this machine.
	HasSystemd func() bool
	// Systemctl runs `systemctl ARGS...`.
	Systemctl func(ctx context.Context, args ...string) error
}

func (o *Options) defaults() error {
	if o.UnitDir == "" {
		o.UnitDir = DefaultUnitDir
	}
	if o.Exe == "" {
		exe, err := os.Executable()
		if err != nil {
			return fmt.Errorf("service: where is meshd? %w", err)
		}
		if exe, err = filepath.EvalSymlinks(exe); err != nil {
			return fmt.Errorf("service: where is meshd? %w", err)
		}
		o.Exe = exe
	}
	if o.HasSystemd == nil {
		o.HasSystemd = func() bool {
			// What sd_booted(3) checks, plus the tool to drive it.
			_, err := os.Stat("/run/systemd/system")
			_, lerr := exec.LookPath("systemctl")
			return err == nil && lerr == nil
		}
	}
	if o.Systemctl == nil {
		o.Systemctl = func(ctx context.Context, args ...string) error {
			out, err := exec.CommandContext(ctx, "systemctl", args...).CombinedOutput()
			if err != nil {
				return fmt.Errorf("systemctl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
			}
			return nil
		}
	}
	return nil
}

// Command is `meshd service`.
func Command() *cli.Command { return NewCommand(Options{}) }

// NewCommand is `meshd service` with options (tests).
func NewCommand(o Options) *cli.Command {
	unitDir := &cli.StringFlag{Name: "unit-dir", Value: DefaultUnitDir, Usage: "`DIR` of the unit file"}
	dry := &cli.BoolFlag{Name: "dry-run", Usage: "print what would be done (the unit's text), change nothing"}
	return &cli.Command{
		Name:  "service",
		Usage: "install or remove a systemd unit that runs meshd",
		Subcommands: []*cli.Command{{
			Name:      "install",
			Usage:     "write and enable a systemd unit (meshd-ROLE.service) running ROLE with FLAGS",
			ArgsUsage: "[--] [ROLE [FLAGS...]]",
			Description: "ROLE is agent (the default), all, control, signal or relay; FLAGS are that role's flags,\n" +
				"which the unit's ExecStart runs as given, e.g.\n\n" +
				"   meshd service install agent --join meshd1_…\n" +
				"   meshd service install --user meshd -- all --data /var/lib/meshd --listen :443\n\n" +
				"The unit goes to /etc/systemd/system/meshd-ROLE.service; systemctl daemon-reload and\n" +
				"enable --now start it. With --user the service runs as that (existing) user with only the\n" +
				"capabilities the role needs and --data/--state as its only writable paths.",
			Flags: []cli.Flag{unitDir, dry,
				&cli.StringFlag{Name: "user", Usage: "run the service as `USER` (which must exist), not root"},
				&cli.BoolFlag{Name: "force", Usage: "replace a unit that exists"},
			},
			Action: func(c *cli.Context) error { return install(c, o) },
		}, {
			Name:      "uninstall",
			Usage:     "stop, disable and remove the unit of ROLE (agent by default)",
			ArgsUsage: "[ROLE]",
			Flags:     []cli.Flag{unitDir, dry},
			Action:    func(c *cli.Context) error { return uninstall(c, o) },
		}},
	}
}

func install(c *cli.Context, o Options) error {
	if c.IsSet("unit-dir") {
		o.UnitDir = c.String("unit-dir")
	}
	if err := o.defaults(); err != nil {
		return cli.Exit(err.Error(), 1)
	}
	args := c.Args().Slice()
	if len(args) > 0 && args[0] == "--" {
		args = args[1:]
	}
	role := "agent"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		role, args = args[0], args[1:]
	}
	spec := UnitSpec{Exe: o.Exe, Role: role, Args: args, User: c.String("user"), EnvDir: o.EnvDir}
	text, err := Unit(spec)
	if err != nil {
		return cli.Exit(err.Error(), 2)
	}
	path := filepath.Join(o.UnitDir, UnitName(role))
	w := c.App.Writer
	envFile, envText := EnvFile(spec)
	if c.Bool("dry-run") {
		if envFile != "" {
			fmt.Fprintf(w, "# would write %s (mode 0600: the secret flags, not shown)\n", envFile)
		}
		fmt.Fprintf(w, "# would write %s and run: systemctl daemon-reload; systemctl enable --now %s\n%s", path, UnitName(role), text)
		return nil
	}
	if !o.HasSystemd() {
		return cli.Exit(fmt.Sprintf("service: systemd does not run this machine (no /run/systemd/system or no systemctl): "+
			"start `meshd %s` with your init system; `meshd service install --dry-run` shows the unit for reference", role), 1)
	}
	if _, err := os.Stat(path); err == nil && !c.Bool("force") {
		return cli.Exit(fmt.Sprintf("service: %s exists: `meshd service uninstall %s` first, or --force to replace it", path, role), 1)
	}
	if envFile != "" {
		if err := os.MkdirAll(filepath.Dir(envFile), 0o700); err != nil {
			return cli.Exit(fmt.Sprintf("service: %v (run as root)", err), 1)
		}
		if err := writeUnit(envFile, envText, 0o600); err != nil {
			return cli.Exit(fmt.Sprintf("service: %v (run as root)", err), 1)
		}
	}
	if envFile == "" {
		_ = os.Remove(envPath(o.EnvDir, role)) // a replaced unit's secrets
	}
	if err := writeUnit(path, text, 0o644); err != nil {
		return cli.Exit(fmt.Sprintf("service: %v (run as root)", err), 1)
	}
	for _, a := range [][]string{{"daemon-reload"}, {"enable", "--now", UnitName(role)}} {
		if err := o.Systemctl(c.Context, a...); err != nil {
			return cli.Exit(fmt.Sprintf("service: wrote %s, but %v", path, err), 1)
		}
	}
	fmt.Fprintf(w, "installed and started %s (%s); logs: journalctl -u %s\n", UnitName(role), path, UnitName(role))
	return nil
}

func uninstall(c *cli.Context, o Options) error {
	if c.IsSet("unit-dir") {
		o.UnitDir = c.String("unit-dir")
	}
	if err := o.defaults(); err != nil {
		return cli.Exit(err.Error(), 1)
	}
	role := "agent"
	if c.Args().Len() > 1 {
		return cli.Exit(fmt.Sprintf("service uninstall: one role please, got %q", c.Args().Slice()), 2)
	}
	if c.Args().Present() {
		role = c.Args().First()
	}
	if _, ok := roles[role]; !ok {
		return cli.Exit(fmt.Sprintf("service: unknown role %q", role), 2)
	}
	path := filepath.Join(o.UnitDir, UnitName(role))
	if c.Bool("dry-run") {
		fmt.Fprintf(c.App.Writer, "# would run: systemctl disable --now %s; remove %s; systemctl daemon-reload\n", UnitName(role), path)
		return nil
	}
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return cli.Exit(fmt.Sprintf("service: %s is not installed (no %s)", UnitName(role), path), 1)
	}
	if !o.HasSystemd() {
		return cli.Exit("service: systemd does not run this machine (no /run/systemd/system or no systemctl)", 1)
	}
	if err := o.Systemctl(c.Context, "disable", "--now", UnitName(role)); err != nil {
		return cli.Exit(fmt.Sprintf("service: %v", err), 1)
	}
	if err := os.Remove(path); err != nil {
		return cli.Exit(fmt.Sprintf("service: remove %s: %v", path, err), 1)
	}
	if env := envPath(o.EnvDir, role); os.Remove(env) != nil {
		if _, err := os.Stat(env); err == nil {
			return cli.Exit(fmt.Sprintf("service: could not remove %s (the unit's secret flags)", env), 1)
		}
	}
	if err := o.Systemctl(c.Context, "daemon-reload"); err != nil {
		return cli.Exit(fmt.Sprintf("service: %v", err), 1)
	}
	fmt.Fprintf(c.App.Writer, "stopped and removed %s\n", UnitName(role))
	return nil
}

// writeUnit writes a unit or environment file with mode (also over an existing file, whose
// mode WriteFile would keep).
func writeUnit(path, text string, mode os.FileMode) error {
	if err := os.WriteFile(path, []byte(text), mode); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Chmod(path, mode); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
