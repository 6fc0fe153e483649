package control

import (
	"context"
	"errors"
	"strings"
	"time"

	"connectrpc.com/connect"
	"go.uber.org/zap"

	"meshd/store"
)

// adminAuth authenticates admin calls by their bearer token.
type adminAuth struct{ s *Service }

var _ connect.Interceptor = (*adminAuth)(nil)

type callerKey struct{}

// caller is who makes an admin call: the account it acts on and its name
// in audit events.
type caller struct {
	a       *account
	actor   string
	tokenID string // the admin token the call came with
	// role limits what the caller may do (admin_roles.go): owner for admin
	// tokens, the user's role for single sign-on sessions (userID).
	role   string
	userID string
}

func callerOf(ctx context.Context) *caller { return ctx.Value(callerKey{}).(*caller) }

var errBadToken = connect.NewError(connect.CodeUnauthenticated, errors.New(
	"admin token not accepted: pass the token from DIR/admin-token with --token, or run `meshd admin --data DIR` on the control host"))

func (x *adminAuth) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		c, ok := ctx.Value(callerKey{}).(*caller)
		if !ok { // else authenticateFirst did it
			var err error
			if c, err = x.s.authenticate(ctx, req.Header().Get("Authorization")); err != nil {
				return nil, err
			}
			ctx = context.WithValue(ctx, callerKey{}, c)
		}
		return authorized(ctx, c, req, next)
	}
}

func (x *adminAuth) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (x *adminAuth) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		c, err := x.s.authenticate(ctx, conn.RequestHeader().Get("Authorization"))
		if err != nil {
			return err
		}
		return next(context.WithValue(ctx, callerKey{}, c), conn)
	}
}

// authenticate finds the admin token of an Authorization header.
func (s *Service) authenticate(ctx context.Context, header string) (*caller, error) {
	tok, ok := strings.CutPrefix(header, "Bearer ")
	tok = strings.TrimSpace(tok)
	if !ok || tok == "" {
		return nil, errBadToken
	}
	if strings.HasPrefix(tok, sessionPrefix) {
		return s.authenticateSession(tok)
	}
	s.mu.Lock()
	t := s.tokens[string(hashSecret(tok))]
	var touch *store.AdminToken
	now := s.now()
	if t != nil && now.Sub(t.LastUsed) > time.Minute {
		c := *t
		c.LastUsed = now
		s.tokens[string(c.Hash)] = &c
		touch = &c
	}
	var a *account
	if t != nil {
		for _, acct := range s.accounts {
			if acct.id == t.AccountID {
				a = acct
			}
		}
	}
	s.mu.Unlock()
	if a == nil {
		return nil, errBadToken
	}
	if touch != nil {
		if err := s.st.TouchAdminToken(ctx, touch.ID, now); err != nil {
			s.log.Warn("record admin token use", zap.Error(err))
		}
	}
	return &caller{a: a, actor: "admin:" + t.Name, tokenID: t.ID, role: store.RoleOwner}, nil
}
