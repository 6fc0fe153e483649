//go:build !linux

package wg

import (
	"context"
	"fmt"
	"runtime"
)

// checkInterface: only netstack runs outside Linux so far.
func checkInterface(_ context.Context, mode Mode, _ Config) error {
	return fmt.Errorf("%w: %s mode on %s is not supported: run with --wg-mode netstack", ErrCannotRun, mode, runtime.GOOS)
}
