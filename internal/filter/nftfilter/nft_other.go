//go:build !linux

package nftfilter

import (
	"fmt"
	"runtime"

	"go.uber.org/zap"

	"meshd/internal/filter"
)

// Table is the filter table of one interface; on this platform New always
// fails.
type Table struct{}

// New returns ErrUnsupported: nftables exists on Linux only.
func New(iface string, _ *zap.Logger) (*Table, error) {
	return nil, fmt.Errorf("%w (this is %s): interface %s", ErrUnsupported, runtime.GOOS, iface)
}

// Name returns the table's name.
func (t *Table) Name() string { return "" }

// Apply fails: see New.
func (t *Table) Apply(*filter.Rules) error { return ErrUnsupported }

// Drops returns nothing: see New.
func (t *Table) Drops() (in, out uint64, err error) { return 0, 0, ErrUnsupported }

// Close does nothing.
func (t *Table) Close() error { return nil }
