package daemon

import "net"

// listenPrivate creates the socket. Windows has no umask; the socket file
// takes the ACL of its directory, so keep --socket in a directory only
// administrators can write.
func listenPrivate(path string) (net.Listener, error) {
	return net.Listen("unix", path)
}
