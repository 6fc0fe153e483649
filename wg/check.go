package wg

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"syscall"
)

// ErrCannotRun marks what Check found: the device cannot be made here as
// configured, and retrying will not change that (a person must).
var ErrCannotRun = errors.New("wg: cannot run")

// Check tells whether New could make the device cfg describes, without
// keeping anything: the UDP port is free, and the mode's privileges and
// TUN device are there. The agent runs it before it logs in, so that a
// machine that cannot run does not register a peer (and use up a setup
// key) first. The errors wrap ErrCannotRun and name the flag that fixes
// them. cfg needs no key or address.
func Check(ctx context.Context, cfg Config) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("wg: check: %w", err)
	}
	if cfg.Name == "" {
		cfg.Name = DefaultName
	}
	if cfg.MTU == 0 {
		cfg.MTU = DefaultMTU
	}
	mode := Resolve(cfg.Mode)
	switch mode {
	case ModeUserspace, ModeKernel, ModeNetstack:
	default:
		return fmt.Errorf("%w: unknown --wg-mode %q (want auto, userspace, kernel or netstack)", ErrCannotRun, cfg.Mode)
	}
	if err := checkPort(cfg.ListenPort); err != nil {
		return err
	}
	if mode == ModeNetstack {
		return nil
	}
	return checkInterface(ctx, mode, cfg)
}

// checkPort binds the WireGuard port as the device will (UDP, IPv4 and,
// where the machine has it, IPv6) and lets it go again.
func checkPort(port uint16) error {
	if port == 0 {
		return nil
	}
	for _, network := range []string{"udp4", "udp6"} {
		c, err := net.ListenPacket(network, net.JoinHostPort("", strconv.Itoa(int(port))))
		if err != nil {
			if network == "udp6" && (errors.Is(err, syscall.EAFNOSUPPORT) || errors.Is(err, syscall.EADDRNOTAVAIL) || errors.Is(err, syscall.EPROTONOSUPPORT)) {
				continue // no IPv6 here: the device does without it too
			}
			if errors.Is(err, syscall.EADDRINUSE) {
				return fmt.Errorf("%w: UDP port %d is in use (another agent or WireGuard on this machine?): choose another --port, or --port 0 for any free one", ErrCannotRun, port)
			}
			if errors.Is(err, syscall.EACCES) || errors.Is(err, syscall.EPERM) {
				return fmt.Errorf("%w: UDP port %d: %v: choose another --port (above 1023 without root)", ErrCannotRun, port, err)
			}
			return fmt.Errorf("%w: UDP port %d: %v: choose another --port", ErrCannotRun, port, err)
		}
		c.Close()
	}
	return nil
}
