package relay

import (
	"errors"
	"net"

	"github.com/pion/turn/v3"
	"go.uber.org/zap"

	"meshd/internal/turncred"
)

// authenticate is pion's AuthHandler: it returns the long-term key of a
// TURN REST username (MD5(username:realm:password), the password being
// the HMAC of the username under the shared secret) unless the username
// is malformed, expired or for another realm. A forged password fails
// pion's MESSAGE-INTEGRITY check against this key (error 400).
func (s *Server) authenticate(username, realm string, src net.Addr) ([]byte, bool) {
	if realm != s.opts.Realm {
		s.m.authRefused("realm")
		s.log.Debug("credential refused: wrong realm", zap.String("username", username), zap.String("realm", realm), zap.Stringer("src", src))
		return nil, false
	}
	if _, err := turncred.Check(username, s.opts.Now()); err != nil {
		reason := "malformed"
		if errors.Is(err, turncred.ErrExpired) {
			reason = "expired"
		}
		s.m.authRefused(reason)
		s.log.Debug("credential refused", zap.String("username", username), zap.Stringer("src", src), zap.Error(err))
		return nil, false
	}
	pw := s.password(username)
	if pw == "" {
		s.m.authRefused("no_secret")
		s.log.Warn("credential refused: the TURN secret is empty")
		return nil, false
	}
	return turn.GenerateAuthKey(username, realm, pw), true
}

// password is the TURN REST password of username under the current
// secret, or "" without a secret.
func (s *Server) password(username string) string {
	secret := s.opts.SecretFunc()
	if len(secret) == 0 {
		return ""
	}
	return turncred.Password(secret, username)
}
