package store

import (
	"context"
	"database/sql"
	"fmt"
	"time"
)

// Roles of users. Owners and admins may do everything, auditors read
// everything, users see and manage only their own peers.
const (
	RoleOwner   = "owner"
	RoleAdmin   = "admin"
	RoleAuditor = "auditor"
	RoleUser    = "user"
)

// User is a person who logs in through the identity provider: the
// provider's issuer and subject name them; email and name are what the
// provider said at the last login.
type User struct {
	ID        string
	AccountID string
	Issuer    string
	Subject   string
	Email     string
	Name      string
	Role      string
	Blocked   bool
	Created   time.Time
	LastLogin time.Time
}

// SSOData is what an account keeps about single sign-on: its users, which
// peer belongs to which user, and the groups the provider manages.
type SSOData struct {
	Users     []User
	PeerUsers map[string]string // peer id → user id
	IdPGroups map[string]bool   // group ids
}

// LoadSSO reads an account's users, peer owners and provider-managed groups.
func (s *Store) LoadSSO(ctx context.Context, accountID string) (*SSOData, error) {
	d := &SSOData{PeerUsers: map[string]string{}, IdPGroups: map[string]bool{}}
	l := loader{ctx: ctx, s: s, account: accountID}
	l.each(`SELECT id, issuer, subject, email, name, role, blocked, created, last_login
		FROM users WHERE account_id = ? ORDER BY created, id`, func(r *sql.Rows) error {
		u := User{AccountID: accountID}
		var blocked, created, lastLogin int64
		if err := r.Scan(&u.ID, &u.Issuer, &u.Subject, &u.Email, &u.Name, &u.Role, &blocked, &created, &lastLogin); err != nil {
			return err
		}
		u.Blocked, u.Created, u.LastLogin = blocked != 0, fromUnixNano(created), fromUnixNano(lastLogin)
		d.Users = append(d.Users, u)
		return nil
	})
	for p, us := range l.pairs(`SELECT pu.peer_id, pu.user_id FROM peer_users pu
		JOIN peers p ON p.id = pu.peer_id WHERE p.account_id = ?`) {
		d.PeerUsers[p] = us[0]
	}
	l.each(`SELECT ig.group_id FROM idp_groups ig JOIN groups g ON g.id = ig.group_id WHERE g.account_id = ?`,
		func(r *sql.Rows) error {
			var id string
			if err := r.Scan(&id); err != nil {
				return err
			}
			d.IdPGroups[id] = true
			return nil
		})
	if l.err != nil {
		return nil, fmt.Errorf("store: load users of %s: %w", accountID, l.err)
	}
	return d, nil
}

// PutUser writes a user.
func (t *Tx) PutUser(u User) error {
	return t.upsert("users", []string{"id", "account_id", "issuer", "subject", "email", "name", "role", "blocked",
		"created", "last_login"},
		u.ID, u.AccountID, u.Issuer, u.Subject, u.Email, u.Name, u.Role, int64(b2i(u.Blocked)), unixNano(u.Created),
		unixNano(u.LastLogin))
}

// DeleteUser deletes a user; their peers lose their owner (delete those
// first to take them out of the network).
func (t *Tx) DeleteUser(id string) error {
	return t.exec("delete user", `DELETE FROM users WHERE id = ?`, id)
}

// SetPeerUser records that a peer belongs to a user.
func (t *Tx) SetPeerUser(peerID, userID string) error {
	return t.exec("set peer user", `INSERT INTO peer_users (peer_id, user_id) VALUES (?, ?)
		ON CONFLICT(peer_id) DO UPDATE SET user_id = excluded.user_id`, peerID, userID)
}

// SetIdPGroup marks a group as managed by the identity provider.
func (t *Tx) SetIdPGroup(groupID string) error {
	return t.exec("set idp group", `INSERT INTO idp_groups (group_id) VALUES (?) ON CONFLICT(group_id) DO NOTHING`, groupID)
}
