package wg

import (
	"context"
	"errors"
	"fmt"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/tun"
)

// checkInterface makes sure this process may make the interface: it needs
// CAP_NET_ADMIN in either TUN mode, and in userspace mode the TUN device
// is made once and closed again, which also finds a missing /dev/net/tun
// and a name another program's interface holds.
func checkInterface(_ context.Context, mode Mode, cfg Config) error {
	if !hasNetAdmin() {
		return fmt.Errorf("%w: --wg-mode %s needs root or CAP_NET_ADMIN: run as root (or grant the capability), or with --wg-mode netstack (no root; the mesh is then reachable only from this process)", ErrCannotRun, mode)
	}
	if mode == ModeKernel {
		return nil
	}
	tdev, err := tun.CreateTUN(cfg.Name, cfg.MTU)
	if err != nil {
		switch {
		case errors.Is(err, os.ErrNotExist):
			return fmt.Errorf("%w: create TUN %s: %v: this machine (or container) has no /dev/net/tun; load the tun module or pass the device in, or run with --wg-mode netstack", ErrCannotRun, cfg.Name, err)
		case errors.Is(err, os.ErrPermission) || errors.Is(err, syscall.EPERM):
			return fmt.Errorf("%w: create TUN %s: %v: needs root or CAP_NET_ADMIN; or run with --wg-mode netstack", ErrCannotRun, cfg.Name, err)
		case errors.Is(err, syscall.EBUSY):
			return fmt.Errorf("%w: create TUN %s: %v: the name is in use; choose another --iface", ErrCannotRun, cfg.Name, err)
		}
		return fmt.Errorf("%w: create TUN %s: %v (or run with --wg-mode netstack)", ErrCannotRun, cfg.Name, err)
	}
	tdev.Close()
	return nil
}

// hasNetAdmin reports whether CAP_NET_ADMIN is in the effective set.
func hasNetAdmin() bool {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return os.Geteuid() == 0
	}
	return data[unix.CAP_NET_ADMIN/32].Effective&(1<<(unix.CAP_NET_ADMIN%32)) != 0
}
