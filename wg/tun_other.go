//go:build !linux

package wg

import (
	"context"
	"fmt"
	"runtime"
)

// On platforms other than Linux only ModeNetstack works so far.

func newUserspace(context.Context, Config) (Device, error) {
	return nil, fmt.Errorf("%w: userspace mode on %s (only Linux is supported yet; use --wg-mode netstack)", ErrUnsupported, runtime.GOOS)
}

func newKernel(context.Context, Config) (Device, error) {
	return nil, fmt.Errorf("%w: kernel mode on %s (Linux only; use --wg-mode netstack)", ErrUnsupported, runtime.GOOS)
}
