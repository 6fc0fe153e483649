package control

// Users: people who log in through the identity provider. Peers that joined
// by single sign-on belong to their user; a blocked user's peers, and those
// whose login expired, are left out of every map (setup-key peers keep the
// behaviour they always had). The account's mu guards ssoState.

import (
	"context"
	"slices"
	"strings"
	"time"

	"connectrpc.com/connect"
	"go.uber.org/zap"

	adminv1 "meshd/api/admin/v1"
	controlv1 "meshd/api/control/v1"
	"meshd/internal/netmap"
	"meshd/store"
)

// ssoState is an account's users, their peers and the provider's groups.
type ssoState struct {
	users     map[string]*store.User
	peerUser  map[string]string // peer id → user id
	idpGroups map[string]bool   // group ids
}

func (st *ssoState) init(d *store.SSOData) {
	st.users, st.peerUser, st.idpGroups = map[string]*store.User{}, map[string]string{}, map[string]bool{}
	if d == nil {
		return
	}
	for i := range d.Users {
		st.users[d.Users[i].ID] = &d.Users[i]
	}
	for p, u := range d.PeerUsers {
		st.peerUser[p] = u
	}
	for g := range d.IdPGroups {
		st.idpGroups[g] = true
	}
}

var (
	refuseUserBlocked = refusal{controlv1.Reason_REASON_USER_BLOCKED, connect.CodePermissionDenied,
		"login refused: your user is blocked; ask an admin (meshd admin users unblock USER)", ""}
	refuseSSOExpired = refusal{controlv1.Reason_REASON_LOGIN_EXPIRED, connect.CodeUnauthenticated,
		"login expired: run `meshd up --sso`", ""}
)

// userOf returns the user a peer belongs to, nil for setup-key peers.
// Callers hold mu.
func (a *account) userOf(peerID string) *store.User {
	return a.sso.users[a.sso.peerUser[peerID]]
}

// userPeers returns the peers of a user. Callers hold mu.
func (a *account) userPeers(userID string) []*store.Peer {
	var out []*store.Peer
	for _, p := range sorted(a.peers, func(p *store.Peer) (time.Time, string) { return p.Created, p.ID }) {
		if a.sso.peerUser[p.ID] == userID {
			out = append(out, p)
		}
	}
	return out
}

// ssoHidden reports whether peer p is kept out of every map: its user is
// blocked, or it joined by single sign-on and its login expired. Callers
// hold mu.
func (a *account) ssoHidden(p *store.Peer, now time.Time) bool {
	u := a.userOf(p.ID)
	return u != nil && (u.Blocked || a.loginExpired(p, now))
}

// ssoRefusal is why a peer of a user may not log in or sync now, nil when
// it may. Callers hold mu.
func (a *account) ssoRefusal(p *store.Peer, now time.Time) error {
	u := a.userOf(p.ID)
	switch {
	case u == nil:
		return nil
	case u.Blocked:
		return refuseUserBlocked.err("")
	case a.loginExpired(p, now):
		return refuseSSOExpired.err("")
	}
	return nil
}

// userLabel names a user in events and peer listings: the email, else the
// subject.
func userLabel(u *store.User) string {
	if u.Email != "" {
		return u.Email
	}
	return u.Subject
}

func (a *account) userMsg(u *store.User) *adminv1.User {
	msg := &adminv1.User{Id: u.ID, Issuer: u.Issuer, Subject: u.Subject, Email: u.Email, Name: u.Name, Role: u.Role,
		Blocked: u.Blocked, Created: ts(u.Created), LastLogin: ts(u.LastLogin), Peers: []string{}}
	for _, p := range a.userPeers(u.ID) {
		msg.Peers = append(msg.Peers, p.Name)
	}
	return msg
}

func (a *account) userRef(ref string) (*store.User, error) {
	return find(a.sso.users, ref, "user", "users", func(u *store.User) []string { return []string{u.Email, u.Subject} })
}

func checkRole(r string) (string, error) {
	r = strings.ToLower(strings.TrimSpace(r))
	switch r {
	case store.RoleOwner, store.RoleAdmin, store.RoleAuditor, store.RoleUser:
		return r, nil
	}
	return "", invalidf("role %q: want owner, admin, auditor or user", r)
}

func (a *account) listUsers(ctx context.Context, actor string, m *adminv1.ListUsersRequest) (*adminv1.ListUsersResponse, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := &adminv1.ListUsersResponse{Users: []*adminv1.User{}}
	for _, u := range sorted(a.sso.users, func(u *store.User) (time.Time, string) { return u.Created, u.ID }) {
		out.Users = append(out.Users, a.userMsg(u))
	}
	return out, nil
}

func (a *account) getUser(ctx context.Context, actor string, m *adminv1.GetUserRequest) (*adminv1.User, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	u, err := a.userRef(m.Id)
	if err != nil {
		return nil, err
	}
	return a.userMsg(u), nil
}

func (a *account) updateUser(ctx context.Context, actor string, m *adminv1.UpdateUserRequest) (*adminv1.User, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	u, err := a.userRef(m.Id)
	if err != nil {
		return nil, err
	}
	nu := *u
	var changes []string
	if m.Role != nil {
		if nu.Role, err = checkRole(*m.Role); err != nil {
			return nil, err
		}
		changes = append(changes, "role "+nu.Role)
	}
	if m.Blocked != nil {
		nu.Blocked = *m.Blocked
		changes = append(changes, map[bool]string{true: "blocked", false: "unblocked"}[nu.Blocked])
	}
	var ids []string
	for _, p := range a.userPeers(u.ID) {
		ids = append(ids, p.ID)
	}
	err = a.commit(ctx, audit{actor: actor, action: "user.updated", targetType: "user", targetID: u.ID,
		targetName: userLabel(u), detail: strings.Join(changes, ", ")},
		func(tx *store.Tx) error { return tx.PutUser(nu) },
		func() { a.sso.users[u.ID] = &nu },
		netmap.Change{Peers: ids})
	if err != nil {
		return nil, err
	}
	if nu.Blocked && !u.Blocked {
		for _, id := range ids {
			a.dist.kick(id, refuseUserBlocked.err(""))
		}
		a.log.Info("user blocked", zap.String("user", userLabel(&nu)), zap.Int("peers", len(ids)))
	}
	return a.userMsg(&nu), nil
}

func (a *account) deleteUser(ctx context.Context, actor string, m *adminv1.DeleteUserRequest) (*adminv1.DeleteUserResponse, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	u, err := a.userRef(m.Id)
	if err != nil {
		return nil, err
	}
	for _, p := range a.userPeers(u.ID) {
		if err := a.removePeerLocked(ctx, actor, p, "user "+userLabel(u)+" deleted"); err != nil {
			return nil, err
		}
		delete(a.sso.peerUser, p.ID)
	}
	err = a.commit(ctx, audit{actor: actor, action: "user.deleted", targetType: "user", targetID: u.ID, targetName: userLabel(u)},
		func(tx *store.Tx) error { return tx.DeleteUser(u.ID) },
		func() { delete(a.sso.users, u.ID) },
		netmap.Change{})
	if err != nil {
		return nil, err
	}
	return &adminv1.DeleteUserResponse{}, nil
}

// noteSSOExpiry takes a peer of a user out of the maps when the janitor
// first sees its login expired. Callers hold mu.
func (a *account) noteSSOExpiry(p *store.Peer, wasNoted bool) {
	if !wasNoted && a.userOf(p.ID) != nil {
		a.change(netmap.Change{Peers: []string{p.ID}})
	}
}

// peerUserName is the user column of a peer's admin listing.
func (a *account) peerUserName(peerID string) (name, id string) {
	if u := a.userOf(peerID); u != nil {
		return userLabel(u), u.ID
	}
	return "", ""
}

func (x *adminAPI) ListUsers(ctx context.Context, req *connect.Request[adminv1.ListUsersRequest]) (*connect.Response[adminv1.ListUsersResponse], error) {
	return handle(ctx, req, func(a *account, actor string, m *adminv1.ListUsersRequest) (*adminv1.ListUsersResponse, error) {
		return a.listUsers(ctx, actor, m)
	})
}

func (x *adminAPI) GetUser(ctx context.Context, req *connect.Request[adminv1.GetUserRequest]) (*connect.Response[adminv1.User], error) {
	return handle(ctx, req, func(a *account, actor string, m *adminv1.GetUserRequest) (*adminv1.User, error) {
		return a.getUser(ctx, actor, m)
	})
}

func (x *adminAPI) UpdateUser(ctx context.Context, req *connect.Request[adminv1.UpdateUserRequest]) (*connect.Response[adminv1.User], error) {
	return handle(ctx, req, func(a *account, actor string, m *adminv1.UpdateUserRequest) (*adminv1.User, error) {
		return a.updateUser(ctx, actor, m)
	})
}

func (x *adminAPI) DeleteUser(ctx context.Context, req *connect.Request[adminv1.DeleteUserRequest]) (*connect.Response[adminv1.DeleteUserResponse], error) {
	return handle(ctx, req, func(a *account, actor string, m *adminv1.DeleteUserRequest) (*adminv1.DeleteUserResponse, error) {
		return a.deleteUser(ctx, actor, m)
	})
}

// loginExpiredErr is the refusal of a peer whose login expired: people are
// told to log in again by single sign-on. Callers hold mu.
func (a *account) loginExpiredErr(p *store.Peer) error {
	if a.userOf(p.ID) != nil {
		return refuseSSOExpired.err("")
	}
	return refuseLoginExpired.err("")
}

// idpGroupEdit refuses a hand edit of a group the identity provider keeps.
// Callers hold mu.
func (a *account) idpGroupEdit(g *store.Group) error {
	if a.sso.idpGroups[g.ID] {
		return conflictf("group %s is kept by the identity provider's groups claim: change its members there", g.Name)
	}
	return nil
}

// hiddenRefusal is why a peer of a user has no map, nil when it has no
// such reason (it was deleted).
func (a *account) hiddenRefusal(peerID string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if p := a.peers[peerID]; p != nil {
		return a.ssoRefusal(p, a.s.now())
	}
	return nil
}

// idpMembershipEdit refuses a hand change of a peer's membership in groups
// the identity provider keeps. Callers hold mu.
func (a *account) idpMembershipEdit(have, want []string) error {
	for g := range a.sso.idpGroups {
		if slices.Contains(have, g) != slices.Contains(want, g) {
			return conflictf("group %s is kept by the identity provider's groups claim: change its members there", a.groups[g].Name)
		}
	}
	return nil
}
