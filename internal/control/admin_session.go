package control

// Admin sessions: a person who logged in through the identity provider
// (`meshd admin login`) gets a short-lived bearer token that the admin API
// accepts next to admin tokens. It is signed with control's ticket key (a
// purpose of its own), so any replica sharing the database accepts it and
// nothing is stored; the user's current role and blocked state are looked
// up at every call, so a change applies at once.

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	controlv1 "meshd/api/control/v1"
	"meshd/internal/netmap"
	"meshd/store"
)

// SessionTTL is how long an admin session token lasts.
const SessionTTL = 12 * time.Hour

const (
	sessionPrefix  = "meshd-session."
	sessionPurpose = "meshd/admin-session\n"
)

type sessionClaims struct {
	Account string `json:"a"`
	User    string `json:"u"`
	Expires int64  `json:"e"` // Unix seconds
}

var errSessionExpired = connect.NewError(connect.CodeUnauthenticated, errors.New(
	"admin session expired or not valid: run `meshd admin login --control URL` again"))

// adminSession makes an admin session token for a verified person.
func (a *account) adminSession(ctx context.Context, id *identity) (*controlv1.FinishSSOLoginResponse, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	u, err := a.upsertUser(id)
	if err != nil {
		return nil, err
	}
	err = a.commit(ctx, audit{actor: "user:" + userLabel(u), action: "user.login", targetType: "user", targetID: u.ID,
		targetName: userLabel(u), detail: "admin session, role " + u.Role},
		func(tx *store.Tx) error { return tx.PutUser(*u) },
		func() { a.sso.users[u.ID] = u }, netmap.Change{})
	if err != nil {
		return nil, connect.NewError(connect.CodeInternal, err)
	}
	exp := a.s.now().Add(SessionTTL)
	payload, _ := json.Marshal(sessionClaims{Account: a.id, User: u.ID, Expires: exp.Unix()})
	sig := ed25519.Sign(a.s.ticketKey, append([]byte(sessionPurpose), payload...))
	tok := sessionPrefix + base64.RawURLEncoding.EncodeToString(payload) + "." + base64.RawURLEncoding.EncodeToString(sig)
	return &controlv1.FinishSSOLoginResponse{AdminToken: tok, AdminTokenExpires: timestamppb.New(exp), User: userLabel(u)}, nil
}

// authenticateSession checks an admin session token.
func (s *Service) authenticateSession(tok string) (*caller, error) {
	p, sg, ok := strings.Cut(strings.TrimPrefix(tok, sessionPrefix), ".")
	if !ok {
		return nil, errSessionExpired
	}
	payload, err1 := base64.RawURLEncoding.DecodeString(p)
	sig, err2 := base64.RawURLEncoding.DecodeString(sg)
	if err1 != nil || err2 != nil || !ed25519.Verify(s.ticketKey.Public().(ed25519.PublicKey), append([]byte(sessionPurpose), payload...), sig) {
		return nil, errSessionExpired
	}
	var c sessionClaims
	if err := json.Unmarshal(payload, &c); err != nil || !s.now().Before(time.Unix(c.Expires, 0)) {
		return nil, errSessionExpired
	}
	for _, a := range s.accountList() {
		if a.id != c.Account {
			continue
		}
		a.mu.Lock()
		u := a.sso.users[c.User]
		var cu store.User
		if u != nil {
			cu = *u
		}
		a.mu.Unlock()
		if u == nil || cu.Blocked {
			// The session no longer authenticates anyone (not a role's
			// limit): clients such as the dashboard sign it out.
			return nil, connect.NewError(connect.CodeUnauthenticated, errors.New("your user is blocked or deleted: ask an admin"))
		}
		return &caller{a: a, actor: "user:" + userLabel(&cu), role: cu.Role, userID: cu.ID}, nil
	}
	return nil, errSessionExpired
}
