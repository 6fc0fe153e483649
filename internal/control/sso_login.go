package control

import (
	"context"
	"fmt"
	"slices"

	"connectrpc.com/connect"
	"go.uber.org/zap"

	controlv1 "meshd/api/control/v1"
	"meshd/internal/netmap"
	"meshd/store"
)

// ssoLogin registers the peer of key pub for a verified person, or logs it
// in again (keeping its address): the user is created or updated, the
// provider's groups synced, and the person's peers put in them.
func (a *account) ssoLogin(ctx context.Context, pub string, id *identity, meta *controlv1.PeerMeta) (*controlv1.SelfConfig, string, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	now := a.s.now()
	u, err := a.upsertUser(id)
	if err != nil {
		return nil, "", err
	}
	actor := "user:" + userLabel(u)
	groups, newGroups := a.idpGroupsFor(id.groups)

	p := a.byKey[pub]
	var np store.Peer
	ev := audit{actor: actor, targetType: "peer"}
	if p == nil {
		ip, ok := a.allocIP()
		if !ok {
			return nil, "", refuseNetworkFull.err(a.network.String())
		}
		label := a.label(meta.Hostname, "")
		np = store.Peer{ID: newID(), AccountID: a.id, PublicKey: pub, Name: label, DNSLabel: label,
			OverlayIP: ip.String(), Created: a.stamp(), LastSeen: now}
		ev.action, ev.detail = "peer.added", fmt.Sprintf("single sign-on, ip %s, key %s…", np.OverlayIP, pub[:8])
	} else {
		np = *p
		ev.action, ev.detail = "peer.login", "single sign-on"
	}
	// A peer of a person: its login expires with the account's setting.
	np.Hostname, np.OS, np.Version = meta.Hostname, meta.Os, meta.Version
	np.LoginExpirationEnabled, np.LastLogin = true, now
	ev.targetID, ev.targetName = np.ID, np.Name

	// The person's peers (this one included) get the provider's groups in
	// place of the provider's groups they had.
	peers := map[string]store.Peer{np.ID: np}
	for _, q := range a.userPeers(u.ID) {
		if q.ID != np.ID {
			peers[q.ID] = *q
		}
	}
	var changed []string
	for pid, q := range peers {
		q.Groups = withIdPGroups(q.Groups, groups, a.sso.idpGroups)
		peers[pid] = q
		changed = append(changed, pid)
	}
	var groupIDs []string
	for _, g := range newGroups {
		groupIDs = append(groupIDs, g.ID)
	}
	err = a.commit(ctx, ev, func(tx *store.Tx) error {
		if err := tx.PutUser(*u); err != nil {
			return err
		}
		for _, g := range newGroups {
			if err := tx.PutGroup(*g); err != nil {
				return err
			}
			if err := tx.SetIdPGroup(g.ID); err != nil {
				return err
			}
		}
		for _, q := range peers {
			if err := tx.PutPeer(q); err != nil {
				return err
			}
		}
		return tx.SetPeerUser(np.ID, u.ID)
	}, func() {
		a.sso.users[u.ID] = u
		for _, g := range newGroups {
			a.groups[g.ID] = g
			a.sso.idpGroups[g.ID] = true
		}
		for _, q := range peers {
			a.putPeer(&q)
		}
		a.sso.peerUser[np.ID] = u.ID
		delete(a.expired, np.ID)
	}, netmap.Change{Peers: changed, Groups: groupIDs})
	if err != nil {
		return nil, "", connect.NewError(connect.CodeInternal, err)
	}
	a.log.Info("peer logged in by single sign-on", zap.String("peer", np.Name), zap.String("user", userLabel(u)),
		zap.String("ip", np.OverlayIP), zap.Strings("groups", id.groups))
	return a.selfConfig(a.peers[np.ID], now), userLabel(u), nil
}

// upsertUser returns the user of a verified person, new or with what the
// provider says now; blocked users are refused. The account's first user
// becomes its owner. Callers hold mu; the result is written by the caller.
func (a *account) upsertUser(id *identity) (*store.User, error) {
	now := a.s.now()
	for _, u := range a.sso.users {
		if u.Issuer == id.issuer && u.Subject == id.subject {
			if u.Blocked {
				a.log.Info("SSO login of a blocked user refused", zap.String("user", userLabel(u)))
				return nil, refuseUserBlocked.err("")
			}
			nu := *u
			nu.Email, nu.Name, nu.LastLogin = id.email, id.name, now
			return &nu, nil
		}
	}
	role := store.RoleUser
	if len(a.sso.users) == 0 {
		role = store.RoleOwner
	}
	return &store.User{ID: newID(), AccountID: a.id, Issuer: id.issuer, Subject: id.subject, Email: id.email,
		Name: id.name, Role: role, Created: a.stamp(), LastLogin: now}, nil
}

// idpGroupsFor returns the ids of the provider-managed groups named, making
// the missing ones (returned apart, not yet applied). A group of that name
// made by hand is left alone. Callers hold mu.
func (a *account) idpGroupsFor(names []string) (ids []string, made []*store.Group) {
	seen := map[string]bool{}
	for _, n := range names {
		name, err := checkName("group", n)
		if err != nil {
			a.log.Warn("IdP group name not usable", zap.String("group", cleanAgentText(n)), zap.Error(err))
			continue
		}
		if seen[name] { // a claim naming a group twice makes it once
			continue
		}
		seen[name] = true
		var found *store.Group
		for _, g := range a.groups {
			if g.Name == name {
				found = g
			}
		}
		switch {
		case found == nil:
			g := &store.Group{ID: newID(), AccountID: a.id, Name: name, Created: a.stamp()}
			made = append(made, g)
			ids = append(ids, g.ID)
		case a.sso.idpGroups[found.ID]:
			ids = append(ids, found.ID)
		default:
			a.log.Warn("IdP group has the name of a group made by hand; not synced", zap.String("group", name))
		}
	}
	return ids, made
}

// withIdPGroups replaces the provider-managed groups among have with want.
func withIdPGroups(have, want []string, idp map[string]bool) []string {
	out := slices.DeleteFunc(slices.Clone(have), func(g string) bool { return idp[g] })
	for _, g := range want {
		if !slices.Contains(out, g) {
			out = append(out, g)
		}
	}
	return out
}
