//go:build !linux

package netcheck

import (
	"errors"
	"net/netip"
)

// defaultGateway is only known on Linux; elsewhere pass Options.Gateway.
func defaultGateway() (netip.Addr, error) {
	return netip.Addr{}, errors.New("netcheck: finding the default gateway is supported on Linux only")
}
