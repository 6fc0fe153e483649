package fwmark

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// Control sets Mark on a socket before it connects or binds: use it as
// net.Dialer.Control or net.ListenConfig.Control. A failure (no
// CAP_NET_ADMIN) leaves the socket unmarked and is not an error: see the
// package comment.
func Control(_, _ string, c syscall.RawConn) error {
	_ = c.Control(func(fd uintptr) {
		_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, int(Mark))
	})
	return nil
}

// Get returns the mark on the socket (0 when none or unknown).
func Get(c syscall.Conn) uint32 {
	rc, err := c.SyscallConn()
	if err != nil {
		return 0
	}
	var m int
	_ = rc.Control(func(fd uintptr) {
		m, _ = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK)
	})
	return uint32(m)
}

// Set marks an open socket (see Control).
func Set(c syscall.Conn) {
	if rc, err := c.SyscallConn(); err == nil {
		_ = Control("", "", rc)
	}
}
