//go:build !linux

package relay

import (
	"errors"
	"net"
	"net/netip"
)

func gsoSupported(*net.UDPConn) bool { return false }

func sendSegments(*net.UDPConn, []byte, int, netip.AddrPort) error {
	return errors.New("relay: no UDP GSO on this platform")
}

func gsoFatal(error) bool { return true }

const msgTrunc = 0x20 // MSG_TRUNC on the BSDs and Linux
