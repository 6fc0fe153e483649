//go:build !linux

package routing

// New returns ErrUnsupported: only Linux can be a routing peer for now.
func New(cfg Config) (*Manager, error) { return nil, ErrUnsupported }
