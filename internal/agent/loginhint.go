package agent

import (
	"crypto/x509"
	"errors"
	"io"
	"strings"

	"go.uber.org/zap/zapcore"

	"meshd/internal/tlsconf"
)

// loginHint says what the operator must do about a login error that
// retrying cannot fix (a wrong pin, a wrong scheme), or "" for one that may
// pass by itself (control down, no network).
func loginHint(err error, controlURL string) string {
	var unknownCA x509.UnknownAuthorityError
	switch {
	case errors.Is(err, tlsconf.ErrPinMismatch) || strings.Contains(err.Error(), "pinned fingerprint"):
		return "control's certificate is not the one pinned in the join token (was the server's --data or certificate " +
			"replaced?): get a new join line on the server (meshd admin setup-keys create) and run meshd agent --join TOKEN"
	case errors.As(err, &unknownCA) || strings.Contains(err.Error(), "certificate signed by unknown authority"):
		return "control's certificate is self-signed and no pin is known: use the join line the server printed " +
			"(meshd agent --join TOKEN) or pass --tls-pin sha256:HEX"
	case strings.HasPrefix(controlURL, "http://") && (errors.Is(err, io.ErrUnexpectedEOF) || strings.Contains(err.Error(), "EOF")):
		return "control closed the connection at once: if it serves HTTPS (it does unless started with --insecure), use https:// in --control"
	}
	return ""
}

// loginLog decides how loud each failed login is: an error the operator
// must fix is logged once, with its hint, at error level, and then only at
// debug level while the agent keeps retrying; others are warnings.
type loginLog struct{ hinted map[string]bool }

func (l *loginLog) failed(err error, controlURL string) (zapcore.Level, string) {
	hint := loginHint(err, controlURL)
	switch {
	case hint == "":
		return zapcore.WarnLevel, "login failed; retrying"
	case l.hinted[hint]:
		return zapcore.DebugLevel, "login failed; retrying: " + hint
	}
	if l.hinted == nil {
		l.hinted = map[string]bool{}
	}
	l.hinted[hint] = true
	return zapcore.ErrorLevel, "cannot log in to control: " + hint + " (the agent keeps retrying quietly)"
}
