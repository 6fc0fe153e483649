//go:build !linux

package udpgso

import (
	"net"
	"net/netip"
)

// Supported is false: UDP GSO is Linux only.
func Supported(*net.UDPConn) bool { return false }

// Send returns ErrUnsupported: UDP GSO is Linux only.
func Send(*net.UDPConn, []byte, int, netip.AddrPort) error { return ErrUnsupported }
