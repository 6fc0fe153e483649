package wg

import (
	"sync"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// logGate silences a logger for good. wireguard-go stops some of its worker
// goroutines only after Device.Close returns, and relay readers can outlive
// Close; nothing may log through the caller's logger after Close (in tests
// it belongs to a test that has ended).
type logGate struct {
	mu  sync.RWMutex
	off bool
}

// close silences the gate, waiting for writes in progress.
func (g *logGate) close() {
	g.mu.Lock()
	g.off = true
	g.mu.Unlock()
}

func (g *logGate) isOff() bool {
	g.mu.RLock()
	defer g.mu.RUnlock()
	return g.off
}

// wrap returns l writing through the gate.
func (g *logGate) wrap(l *zap.Logger) *zap.Logger {
	return l.WithOptions(zap.WrapCore(func(c zapcore.Core) zapcore.Core {
		return &gatedCore{Core: c, g: g}
	}))
}

type gatedCore struct {
	zapcore.Core
	g *logGate
}

func (c *gatedCore) Enabled(l zapcore.Level) bool { return !c.g.isOff() && c.Core.Enabled(l) }

func (c *gatedCore) With(f []zapcore.Field) zapcore.Core {
	return &gatedCore{Core: c.Core.With(f), g: c.g}
}

func (c *gatedCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.Enabled(e.Level) {
		return ce.AddCore(e, c)
	}
	return ce
}

func (c *gatedCore) Write(e zapcore.Entry, f []zapcore.Field) error {
	c.g.mu.RLock()
	defer c.g.mu.RUnlock()
	if c.g.off {
		return nil
	}
	return c.Core.Write(e, f)
}
