package wg

import (
	"context"
	"fmt"

	"go.uber.org/zap"
)

func newKernel(context.Context, Config) (Device, error) {
	return nil, fmt.Errorf("%w: kernel mode not implemented yet", ErrUnsupported)
}

func kernelAvailable(context.Context, *zap.Logger) bool { return false }
