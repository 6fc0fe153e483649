package wg

import (
	"sync/atomic"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// gatedLogger returns a logger that goes quiet once off is set. wireguard-go
// stops some of its worker goroutines only after Device.Close returns, and
// relay readers can outlive Close; nothing may log through the caller's
// logger after Close (in tests it belongs to a finished test).
func gatedLogger(l *zap.Logger, off *atomic.Bool) *zap.Logger {
	return l.WithOptions(zap.WrapCore(func(c zapcore.Core) zapcore.Core {
		return &gatedCore{Core: c, off: off}
	}))
}

type gatedCore struct {
	zapcore.Core
	off *atomic.Bool
}

func (g *gatedCore) Enabled(l zapcore.Level) bool { return !g.off.Load() && g.Core.Enabled(l) }

func (g *gatedCore) With(f []zapcore.Field) zapcore.Core {
	return &gatedCore{Core: g.Core.With(f), off: g.off}
}

func (g *gatedCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if g.off.Load() {
		return ce
	}
	if g.Core.Enabled(e.Level) {
		return ce.AddCore(e, g)
	}
	return ce
}

func (g *gatedCore) Write(e zapcore.Entry, f []zapcore.Field) error {
	if g.off.Load() {
		return nil
	}
	return g.Core.Write(e, f)
}
