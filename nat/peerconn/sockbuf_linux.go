package peerconn

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// forceBuffers raises a socket's buffers past net.core.[rw]mem_max when the
// process has CAP_NET_ADMIN; without it the calls fail and the buffers stay
// as SetReadBuffer/SetWriteBuffer left them.
func forceBuffers(c syscall.RawConn, size int) {
	_ = c.Control(func(fd uintptr) {
		_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, size)
		_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, size)
	})
}
