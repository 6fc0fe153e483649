//go:build !linux

package pgtest

import (
	"errors"
	"syscall"
)

// Elsewhere unavailable() skips before any of these runs; they exist so
// that tests build on every platform.

const sigkill = syscall.Signal(9)

func ownGroup() *syscall.SysProcAttr { return nil }

func signal(pid int, sig syscall.Signal) error { return errors.ErrUnsupported }
