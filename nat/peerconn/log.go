package peerconn

import (
	"fmt"

	"github.com/pion/logging"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// pionLog routes pion's logs into zap. Pion is chatty at warn level about
// conditions that are normal for meshd (pairs that fail while others work),
// so its info and warnings become debug and its errors warnings.
type pionLog struct{ l *zap.Logger }

// LoggerFactory returns a pion logger factory writing to log.
func LoggerFactory(log *zap.Logger) logging.LoggerFactory { return pionLog{l: log} }

func (p pionLog) NewLogger(scope string) logging.LeveledLogger {
	return pionLog{l: p.l.Named(scope).WithOptions(zap.AddCallerSkip(1))}
}

func (p pionLog) logf(lvl zapcore.Level, format string, args ...any) {
	if ce := p.l.Check(lvl, ""); ce != nil {
		ce.Message = fmt.Sprintf(format, args...)
		ce.Write()
	}
}

func (p pionLog) Trace(msg string)                  {}
func (p pionLog) Tracef(format string, args ...any) {}
func (p pionLog) Debug(msg string)                  { p.logf(zap.DebugLevel, "%s", msg) }
func (p pionLog) Debugf(format string, args ...any) { p.logf(zap.DebugLevel, format, args...) }
func (p pionLog) Info(msg string)                   { p.logf(zap.DebugLevel, "%s", msg) }
func (p pionLog) Infof(format string, args ...any)  { p.logf(zap.DebugLevel, format, args...) }
func (p pionLog) Warn(msg string)                   { p.logf(zap.DebugLevel, "%s", msg) }
func (p pionLog) Warnf(format string, args ...any)  { p.logf(zap.DebugLevel, format, args...) }
func (p pionLog) Error(msg string)                  { p.logf(zap.WarnLevel, "%s", msg) }
func (p pionLog) Errorf(format string, args ...any) { p.logf(zap.WarnLevel, format, args...) }
