package relay

import (
	"fmt"

	"github.com/pion/logging"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// pionLogger adapts pion's leveled logger to zap. pion logs every refused
// or malformed datagram at error level, which on a server reachable from
// the internet is noise an attacker controls: its errors and warnings go to
// debug, its info and below are dropped. What an operator needs to see the
// relay logs itself, and counts in metrics.
type pionLogger struct {
	log   *zap.Logger
	debug bool
}

// pionLoggerFactory gives pion components named zap loggers.
type pionLoggerFactory struct{ log *zap.Logger }

var (
	_ logging.LoggerFactory = pionLoggerFactory{}
	_ logging.LeveledLogger = (*pionLogger)(nil)
)

func (f pionLoggerFactory) NewLogger(scope string) logging.LeveledLogger {
	l := f.log.Named("pion-" + scope)
	return &pionLogger{log: l, debug: l.Core().Enabled(zapcore.DebugLevel)}
}

func (l *pionLogger) Trace(string)          {}
func (l *pionLogger) Tracef(string, ...any) {}
func (l *pionLogger) Debug(string)          {}
func (l *pionLogger) Debugf(string, ...any) {}
func (l *pionLogger) Info(string)           {}
func (l *pionLogger) Infof(string, ...any)  {}

func (l *pionLogger) Warn(msg string) { l.Error(msg) }

func (l *pionLogger) Warnf(format string, args ...any) { l.Errorf(format, args...) }

func (l *pionLogger) Error(msg string) {
	if l.debug {
		l.log.Debug(msg)
	}
}

func (l *pionLogger) Errorf(format string, args ...any) {
	if l.debug {
		l.log.Debug(fmt.Sprintf(format, args...))
	}
}
