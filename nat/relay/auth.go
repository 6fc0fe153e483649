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
// their credentials' expiry and Options.UserValid.
const DefaultRevokeCheck = 15 * time.Second

// accepted notes that a request signed with username passed
// authentication and the integrity check: the newest expiry accepted for
// its id is what keeps that id's allocations alive (see check). Only ids
// holding allocations are tracked, so the map stays bounded by them.
func (s *Server) accepted(username string) {
	exp, id, err := turncred.Parse(username)
	if err != nil {
		return
	}
	s.mu.Lock()
	s.acceptedLocked(id, exp)
	s.mu.Unlock()
}

func (s *Server) acceptedLocked(id string, exp time.Time) {
	if s.users[id] > 0 && exp.After(s.expiry[id]) {
		s.expiry[id] = exp
	}
}

// revokeLoop runs check every Options.RevokeCheck.
func (s *Server) revokeLoop() {
	defer s.loopsWG.Done()
	t := time.NewTicker(s.opts.RevokeCheck)
	defer t.Stop()
	for {
		select {
		case <-s.done:
			return
		case <-t.C:
			s.check()
		}
	}
}

// check ends the allocations of credential ids whose newest accepted
// credential has expired, and of those Options.UserValid no longer
// accepts (a deleted or blocked peer). pion checks the expiry on every
// request, but an allocation needs none to live out its granted lifetime
// (up to an hour, asked for just before the credential expires): without
// this, a peer whose credentials control stopped renewing would keep its
// allocations that long at a relay that cannot ask control. Agents sign
// their periodic permission and allocation refreshes with their newest
// credential, renewed at half its lifetime, so their ids never lapse here.
func (s *Server) check() {
	now := s.opts.Now()
	gone := map[string]bool{}
	if s.opts.UserValid != nil {
		s.mu.Lock()
		ids := make([]string, 0, len(s.users))
		for id := range s.users {
			ids = append(ids, id)
		}
		s.mu.Unlock()
		for _, id := range ids {
			if !s.opts.UserValid(id) {
				gone[id] = true
			}
		}
	}
	type ending struct {
		rc      *relayConn
		expired time.Time // zero: revoked
	}
	var ends []ending
	// Expiries are read with the allocations under one lock: an
	// allocation and the expiry of the credential that made it are
	// recorded together (allocate), so a fresh allocation is never judged
	// by an older entry.
	s.mu.Lock()
	for rc := range s.allocs {
		if gone[rc.id] {
			ends = append(ends, ending{rc: rc})
		} else if exp, ok := s.expiry[rc.id]; ok && !now.Before(exp) {
			ends = append(ends, ending{rc: rc, expired: exp})
		}
	}
	s.mu.Unlock()
	for _, e := range ends {
		if e.expired.IsZero() {
			s.m.refused("revoked")
			s.log.Info("allocation ended: its peer may no longer use the relay", zap.String("id", e.rc.id), zap.Stringer("relay", e.rc.public))
		} else {
			s.m.refused("expired")
			s.log.Info("allocation ended: its credential expired and was not renewed", zap.String("id", e.rc.id), zap.Stringer("relay", e.rc.public), zap.Time("expired", e.expired))
		}
		e.rc.Close()
	}
}
