package sockbuf

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// force raises a socket's buffers past net.core.[rw]mem_max when the
// process has CAP_NET_ADMIN; without it the calls fail and nothing changes.
func force(c syscall.RawConn, size int) {
	_ = c.Control(func(fd uintptr) {
		_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, size)
		_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, size)
	})
}
