//go:build !linux

package peerconn

import "syscall"

// forceBuffers does nothing where there is no SO_RCVBUFFORCE: the plain
// SetReadBuffer/SetWriteBuffer are all there is.
func forceBuffers(syscall.RawConn, int) {}
