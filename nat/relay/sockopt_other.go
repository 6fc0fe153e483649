//go:build !linux

package relay

import "syscall"

const reusePortSupported = false

func controlReusePort(_, _ string, _ syscall.RawConn) error { return nil }
