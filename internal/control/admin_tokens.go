package control

// Admin tokens through the admin API: one per person or script, so that
// each can be revoked alone and the audit log names who did what. Tokens
// live in Service.tokens (by hash, for authenticate); the account's mu
// serialises changes so that "never delete the last token" holds.

import (
	"context"
	"strings"
	"time"

	"connectrpc.com/connect"

	adminv1 "meshd/api/admin/v1"
	"meshd/internal/netmap"
	"meshd/store"
)

func (x *adminAPI) ListAdminTokens(ctx context.Context, req *connect.Request[adminv1.ListAdminTokensRequest]) (*connect.Response[adminv1.ListAdminTokensResponse], error) {
	c := callerOf(ctx)
	return handle(ctx, req, func(a *account, actor string, m *adminv1.ListAdminTokensRequest) (*adminv1.ListAdminTokensResponse, error) {
		out := &adminv1.ListAdminTokensResponse{AdminTokens: []*adminv1.AdminToken{}}
		for _, t := range sorted(a.adminTokens(), func(t *store.AdminToken) (time.Time, string) { return t.Created, t.ID }) {
			out.AdminTokens = append(out.AdminTokens, tokenMsg(t, c.tokenID))
		}
		return out, nil
	})
}

func (x *adminAPI) CreateAdminToken(ctx context.Context, req *connect.Request[adminv1.CreateAdminTokenRequest]) (*connect.Response[adminv1.AdminToken], error) {
	c := callerOf(ctx)
	return handle(ctx, req, func(a *account, actor string, m *adminv1.CreateAdminTokenRequest) (*adminv1.AdminToken, error) {
		return a.createAdminToken(ctx, actor, c.tokenID, m)
	})
}

func (x *adminAPI) DeleteAdminToken(ctx context.Context, req *connect.Request[adminv1.DeleteAdminTokenRequest]) (*connect.Response[adminv1.DeleteAdminTokenResponse], error) {
	return handle(ctx, req, func(a *account, actor string, m *adminv1.DeleteAdminTokenRequest) (*adminv1.DeleteAdminTokenResponse, error) {
		return a.deleteAdminToken(ctx, actor, m)
	})
}

func tokenMsg(t *store.AdminToken, current string) *adminv1.AdminToken {
	return &adminv1.AdminToken{Id: t.ID, Name: t.Name, Created: ts(t.Created), LastUsed: ts(t.LastUsed), Current: t.ID == current}
}

// adminTokens returns copies of the account's tokens by id.
func (a *account) adminTokens() map[string]*store.AdminToken {
	a.s.mu.RLock()
	defer a.s.mu.RUnlock()
	out := map[string]*store.AdminToken{}
	for _, t := range a.s.tokens {
		if t.AccountID == a.id {
			c := *t
			out[c.ID] = &c
		}
	}
	return out
}

func (a *account) createAdminToken(ctx context.Context, actor, current string, m *adminv1.CreateAdminTokenRequest) (*adminv1.AdminToken, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	name, err := checkName("admin token", m.Name)
	if err != nil {
		return nil, err
	}
	for _, t := range a.adminTokens() {
		if strings.EqualFold(t.Name, name) {
			return nil, conflictf("an admin token named %q exists already", t.Name)
		}
	}
	t, plain, err := newAdminToken(a.id, name, a.stamp()) // listed in creation order, also within a clock tick
	if err != nil {
		return nil, err
	}
	err = a.commit(ctx, audit{actor: actor, action: "admin_token.created", targetType: "admin_token", targetID: t.ID, targetName: name},
		func(tx *store.Tx) error { return tx.PutAdminToken(*t) },
		func() {
			a.s.mu.Lock()
			a.s.tokens[string(t.Hash)] = t
			a.s.mu.Unlock()
		}, netmap.Change{})
	if err != nil {
		return nil, err
	}
	a.s.publish(busMsg{Kind: kindTokens})
	msg := tokenMsg(t, current)
	msg.Token = plain
	return msg, nil
}

func (a *account) deleteAdminToken(ctx context.Context, actor string, m *adminv1.DeleteAdminTokenRequest) (*adminv1.DeleteAdminTokenResponse, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	toks := a.adminTokens()
	t, err := find(toks, m.Id, "admin token", "tokens", func(t *store.AdminToken) []string { return []string{t.Name} })
	if err != nil {
		return nil, err
	}
	if len(toks) == 1 {
		return nil, conflictf("admin token %q is the account's last one: create another before deleting it", t.Name)
	}
	err = a.commit(ctx, audit{actor: actor, action: "admin_token.deleted", targetType: "admin_token", targetID: t.ID, targetName: t.Name},
		func(tx *store.Tx) error { return tx.DeleteAdminToken(t.ID) },
		func() {
			a.s.mu.Lock()
			delete(a.s.tokens, string(t.Hash))
			a.s.mu.Unlock()
		}, netmap.Change{})
	if err != nil {
		return nil, err
	}
	a.s.publish(busMsg{Kind: kindTokens})
	return &adminv1.DeleteAdminTokenResponse{}, nil
}
