//go:build !windows

package daemon

import (
	"net"
	"syscall"
)

// listenPrivate creates the socket with no access for anyone; Listen then
// opens it up with chmod, so there is no window in which another user could
// connect.
func listenPrivate(path string) (net.Listener, error) {
	old := syscall.Umask(0o777)
	defer syscall.Umask(old)
	return net.Listen("unix", path)
}
