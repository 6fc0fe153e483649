package relay

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// reusePort lets several UDP sockets share the listening port; the kernel
// spreads clients over them by address hash, so each socket's read loop
// serves its own clients on its own core.
const reusePortSupported = true

func controlReusePort(_, _ string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
	})
	if err != nil {
		return err
	}
	return serr
}
