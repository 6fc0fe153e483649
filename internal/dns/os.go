package dns

import (
	"context"
	"fmt"
	"net/netip"
	"os/exec"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
)

// Runner runs a command and returns its combined output; OS integration
// goes through it so tests can record the commands as text.
type Runner func(ctx context.Context, name string, args ...string) ([]byte, error)

// ExecRunner runs commands with os/exec.
func ExecRunner(ctx context.Context, name string, args ...string) ([]byte, error) {
	return exec.CommandContext(ctx, name, args...).CombinedOutput()
}

// OS modes, as the status reports them.
const (
	// OSResolved: systemd-resolved sends the mesh domain to the resolver.
	OSResolved = "systemd-resolved"
	// OSResolvConf: meshd wrote resolv.conf (direct mode, no
	// systemd-resolved): the mesh resolver first, the mesh domain searched.
	OSResolvConf = "resolv.conf"
	// OSManual: nothing was changed; query the resolver directly.
	OSManual = "manual"
)

// OSOptions configure the OS integration.
type OSOptions struct {
	// Iface is the mesh interface whose DNS is set.
	Iface string
	// Run runs commands (nil: ExecRunner).
	Run Runner
	// Resolved reports whether systemd-resolved manages this machine's
	// DNS and may be configured from here (nil: the real check).
	Resolved func() (bool, string)
	// ResolvConf is the file direct mode writes where systemd-resolved is
	// absent (DefaultResolvConf in the agent); "" never writes one.
	ResolvConf string
	// BackupDir keeps the original ResolvConf while direct mode is on: the
	// agent's state directory. Direct mode needs it.
	BackupDir string
	// Direct reports whether this process may manage ResolvConf (nil: the
	// real check, see directUsable).
	Direct func() (bool, string)
	Log    *zap.Logger
}

// OS points the system's resolver at the mesh resolver for the mesh domain,
// and undoes it on Close.
type OS struct {
	opts OSOptions
	log  *zap.Logger

	mu     sync.Mutex
	mode   string
	set    bool // resolved was configured and must be reverted
	direct bool // resolv.conf was written and must be restored
	server netip.Addr
	domain string
	told   bool // the "how to use it" line was logged
}

// NewOS returns the OS integration for opts.Iface; nothing changes until
// Set.
func NewOS(opts OSOptions) *OS {
	if opts.Run == nil {
		opts.Run = ExecRunner
	}
	if opts.Resolved == nil {
		opts.Resolved = resolvedUsable
	}
	if opts.Direct == nil {
		opts.Direct = directUsable
	}
	if opts.Log == nil {
		opts.Log = zap.NewNop()
	}
	return &OS{opts: opts, log: opts.Log}
}

// Mode is OSResolved or OSManual once Set ran, "" before.
func (o *OS) Mode() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.mode
}

// Set makes server the resolver of domain (a no-op when nothing changed).
// Without systemd-resolved it logs, once, how to query server directly.
func (o *OS) Set(ctx context.Context, server netip.Addr, domain, example string) error {
	domain = strings.TrimSuffix(strings.ToLower(domain), ".")
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.mode != "" && server == o.server && domain == o.domain {
		return nil
	}
	o.server, o.domain = server, domain
	ok, why := o.opts.Resolved()
	if !ok && domain != "" && o.opts.ResolvConf != "" && o.opts.BackupDir != "" {
		can, whyNot := o.opts.Direct()
		if can {
			return o.setDirect(server, domain, example)
		}
		why += "; " + whyNot
	}
	if !ok || domain == "" {
		o.mode = OSManual
		if !o.told {
			o.told = true
			if example == "" {
				example = "peer." + domain
			}
			o.log.Info(fmt.Sprintf("mesh DNS: %s; /etc/resolv.conf left alone. Ask the mesh resolver directly: dig @%s %s",
				why, server, example))
		}
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	cmds := [][]string{
		{"resolvectl", "dns", o.opts.Iface, server.String()},
		{"resolvectl", "domain", o.opts.Iface, "~" + domain},
		{"resolvectl", "default-route", o.opts.Iface, "false"},
	}
	for i, c := range cmds {
		out, err := o.opts.Run(ctx, c[0], c[1:]...)
		if err != nil && i < 2 { // default-route is missing in old versions: harmless
			o.mode = OSManual
			return fmt.Errorf("dns: %s: %v: %s (query the resolver directly: dig @%s %s)",
				strings.Join(c, " "), err, strings.TrimSpace(string(out)), server, example)
		}
	}
	o.mode, o.set = OSResolved, true
	o.log.Info("mesh DNS: systemd-resolved sends the mesh domain to the mesh resolver",
		zap.String("domain", "~"+domain), zap.Stringer("server", server), zap.String("iface", o.opts.Iface))
	return nil
}

// setDirect writes resolv.conf (direct mode). Callers hold mu.
func (o *OS) setDirect(server netip.Addr, domain, example string) error {
	rc := newResolvConf(o.opts.ResolvConf, o.opts.BackupDir)
	if err := rc.set(server, domain); err != nil {
		o.mode = OSManual
		return fmt.Errorf("%w (query the resolver directly: dig @%s %s)", err, server, example)
	}
	if !o.direct {
		o.log.Info("mesh DNS: no systemd-resolved; resolv.conf now asks the mesh resolver first and searches the mesh domain (the original comes back when the agent stops)",
			zap.String("file", o.opts.ResolvConf), zap.String("backup", rc.backup), zap.Stringer("server", server), zap.String("domain", domain))
	}
	o.mode, o.direct = OSResolvConf, true
	return nil
}

// Close undoes Set.
func (o *OS) Close(ctx context.Context) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.direct {
		o.direct = false
		if _, err := newResolvConf(o.opts.ResolvConf, o.opts.BackupDir).restore(); err != nil {
			o.log.Error("mesh DNS: restore resolv.conf", zap.Error(err))
			return err
		}
		o.log.Info("mesh DNS: resolv.conf restored", zap.String("file", o.opts.ResolvConf))
	}
	if !o.set {
		return nil
	}
	o.set = false
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if out, err := o.opts.Run(ctx, "resolvectl", "revert", o.opts.Iface); err != nil {
		// The interface is often gone already, and resolved forgets it then.
		o.log.Debug("resolvectl revert", zap.Error(err), zap.ByteString("output", out))
	}
	return nil
}
