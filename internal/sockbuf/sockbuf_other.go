//go:build !linux

package sockbuf

import "syscall"

// force does nothing where there is no SO_RCVBUFFORCE.
func force(syscall.RawConn, int) {}
