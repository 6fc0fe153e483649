package wg

import (
	"fmt"
	"net/netip"

	"golang.zx2c4.com/wireguard/tun/netstack"
)

// newNetstack runs wireguard-go on a gVisor netstack: no TUN, no root, no
// routes; the overlay exists only inside this process, reached through Net.
// The UDP socket is a real one (the one-socket bind), so peers, STUN and
// relays work exactly as in userspace mode.
func newNetstack(cfg Config) (Device, error) {
	tdev, tnet, err := netstack.CreateNetTUN([]netip.Addr{cfg.Address.Addr()}, nil, cfg.MTU)
	if err != nil {
		return nil, fmt.Errorf("wg: netstack %s: %w", cfg.Name, err)
	}
	d, err := startGoDevice(cfg, tdev)
	if err != nil {
		return nil, err
	}
	d.tnet = tnet
	return d, nil
}
