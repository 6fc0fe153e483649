package relay

import (
	"errors"
	"net"
	"strings"
	"time"

	"github.com/pion/turn/v3"
	"go.uber.org/zap"

	"meshd/internal/turncred"
)

// authenticate is pion's AuthHandler: it returns the long-term key of a
// TURN REST username (MD5(username:realm:password), the password being
// the HMAC of the username under the shared secret) unless the username
// is malformed, expired, revoked (Options.UserValid) or for another realm.
// pion asks on every authenticated request (Allocate, Refresh,
// CreatePermission, ChannelBind), so an allocation whose credential
// expired can no longer be refreshed nor given permissions or channels. A forged password fails
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
	if s.opts.UserValid != nil {
		if _, id, _ := strings.Cut(username, ":"); !s.opts.UserValid(id) {
			s.m.authRefused("revoked")
			s.log.Debug("credential refused: its peer may no longer use the relay", zap.String("username", username), zap.Stringer("src", src))
			return nil, false
		}
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

// DefaultRevokeCheck is how often live allocations are checked against
// Options.UserValid.
const DefaultRevokeCheck = 15 * time.Second

// revokeLoop ends, every Options.RevokeCheck, the allocations of the
// credential ids Options.UserValid no longer accepts (a deleted or
// blocked peer): their credentials stop working at once, their existing
// allocations here.
func (s *Server) revokeLoop() {
	defer s.loopsWG.Done()
	t := time.NewTicker(s.opts.RevokeCheck)
	defer t.Stop()
	for {
		select {
		case <-s.done:
			return
		case <-t.C:
			s.revoke()
		}
	}
}

func (s *Server) revoke() {
	s.mu.Lock()
	ids := make([]string, 0, len(s.users))
	for id := range s.users {
		ids = append(ids, id)
	}
	s.mu.Unlock()
	gone := map[string]bool{}
	for _, id := range ids {
		if !s.opts.UserValid(id) {
			gone[id] = true
		}
	}
	if len(gone) == 0 {
		return
	}
	s.mu.Lock()
	var ends []*relayConn
	for rc := range s.allocs {
		if gone[rc.id] {
			ends = append(ends, rc)
		}
	}
	s.mu.Unlock()
	for _, rc := range ends {
		s.log.Info("allocation ended: its peer may no longer use the relay", zap.String("id", rc.id), zap.Stringer("relay", rc.public))
		rc.Close()
	}
}
