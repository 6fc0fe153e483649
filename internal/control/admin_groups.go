package control

import (
	"context"
	"crypto/rand"
	"slices"
	"strings"
	"time"

	adminv1 "meshd/api/admin/v1"
	"meshd/internal/netmap"
	"meshd/store"
)

func (a *account) groupMsg(g *store.Group) *adminv1.Group {
	msg := &adminv1.Group{Id: g.ID, Name: g.Name, Created: ts(g.Created), Peers: []string{}, IdpManaged: a.sso.idpGroups[g.ID]}
	for _, p := range sorted(a.peers, func(p *store.Peer) (time.Time, string) { return p.Created, p.ID }) {
		if g.IsAll || slices.Contains(p.Groups, g.ID) {
			msg.Peers = append(msg.Peers, p.Name)
		}
	}
	return msg
}

func (a *account) listGroups(ctx context.Context, actor string, m *adminv1.ListGroupsRequest) (*adminv1.ListGroupsResponse, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := &adminv1.ListGroupsResponse{}
	for _, g := range sorted(a.groups, func(g *store.Group) (time.Time, string) { return g.Created, g.ID }) {
		out.Groups = append(out.Groups, a.groupMsg(g))
	}
	return out, nil
}

func (a *account) getGroup(ctx context.Context, actor string, m *adminv1.GetGroupRequest) (*adminv1.Group, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	g, err := a.groupRef(m.Id)
	if err != nil {
		return nil, err
	}
	return a.groupMsg(g), nil
}

// checkGroupName validates a new group name against the others.
func (a *account) checkGroupName(name, self string) (string, error) {
	name, err := checkName("group", name)
	if err != nil {
		return "", err
	}
	for _, g := range a.groups {
		if g.ID != self && strings.EqualFold(g.Name, name) {
			return "", conflictf("a group named %q exists already", g.Name)
		}
	}
	return name, nil
}

// setMembers returns the peers whose groups change when group g gets
// exactly members.
func (a *account) setMembers(g string, members []string) []*store.Peer {
	var changed []*store.Peer
	for _, p := range a.peers {
		in, want := slices.Contains(p.Groups, g), slices.Contains(members, p.ID)
		if in == want {
			continue
		}
		np := *p
		if want {
			np.Groups = append(slices.Clone(p.Groups), g)
		} else {
			np.Groups = slices.DeleteFunc(slices.Clone(p.Groups), func(id string) bool { return id == g })
		}
		changed = append(changed, &np)
	}
	return changed
}

func peerIDsOf(ps []*store.Peer) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.ID
	}
	return out
}

func (a *account) createGroup(ctx context.Context, actor string, m *adminv1.CreateGroupRequest) (*adminv1.Group, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	name, err := a.checkGroupName(m.Name, "")
	if err != nil {
		return nil, err
	}
	members, err := a.peerIDs(m.Peers)
	if err != nil {
		return nil, err
	}
	g := &store.Group{ID: newID(), AccountID: a.id, Name: name, Created: a.stamp()}
	changed := a.setMembers(g.ID, members)
	err = a.commit(ctx, audit{actor: actor, action: "group.created", targetType: "group", targetID: g.ID, targetName: name,
		detail: "peers: " + strings.Join(a.peerNames(members), ",")},
		func(tx *store.Tx) error {
			if err := tx.PutGroup(*g); err != nil {
				return err
			}
			for _, p := range changed {
				if err := tx.PutPeer(*p); err != nil {
					return err
				}
			}
			return nil
		},
		func() {
			a.groups[g.ID] = g
			for _, p := range changed {
				a.putPeer(p)
			}
		},
		netmap.Change{Peers: peerIDsOf(changed)})
	if err != nil {
		return nil, err
	}
	return a.groupMsg(g), nil
}

func (a *account) updateGroup(ctx context.Context, actor string, m *adminv1.UpdateGroupRequest) (*adminv1.Group, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	g, err := a.groupRef(m.Id)
	if err != nil {
		return nil, err
	}
	if g.IsAll {
		return nil, conflictf("group %s holds every peer; it cannot be renamed or edited", g.Name)
	}
	if err := a.idpGroupEdit(g); err != nil {
		return nil, err
	}
	ng := *g
	var details []string
	if m.Name != nil {
		if ng.Name, err = a.checkGroupName(*m.Name, g.ID); err != nil {
			return nil, err
		}
		details = append(details, "name "+ng.Name)
	}
	var changed []*store.Peer
	if m.Peers != nil {
		members, err := a.peerIDs(m.Peers.Values)
		if err != nil {
			return nil, err
		}
		changed = a.setMembers(g.ID, members)
		details = append(details, "peers: "+strings.Join(a.peerNames(members), ","))
	}
	err = a.commit(ctx, audit{actor: actor, action: "group.updated", targetType: "group", targetID: g.ID,
		targetName: ng.Name, detail: strings.Join(details, ", ")},
		func(tx *store.Tx) error {
			if err := tx.PutGroup(ng); err != nil {
				return err
			}
			for _, p := range changed {
				if err := tx.PutPeer(*p); err != nil {
					return err
				}
			}
			return nil
		},
		func() {
			a.groups[g.ID] = &ng
			for _, p := range changed {
				a.putPeer(p)
			}
		},
		netmap.Change{Peers: peerIDsOf(changed)})
	if err != nil {
		return nil, err
	}
	return a.groupMsg(&ng), nil
}

// groupUsers names what refers to group id.
func (a *account) groupUsers(id string) []string {
	var out []string
	for _, p := range a.policies {
		if slices.Contains(p.Sources, id) || slices.Contains(p.Destinations, id) {
			out = append(out, "policy "+p.Name)
		}
	}
	for _, r := range a.routes {
		if slices.Contains(r.Groups, id) {
			out = append(out, "route "+r.Network)
		}
	}
	for _, n := range a.ns {
		if slices.Contains(n.Groups, id) {
			out = append(out, "nameserver group "+n.Name)
		}
	}
	for _, k := range a.keys {
		if slices.Contains(k.AutoGroups, id) {
			out = append(out, "setup key "+k.Name)
		}
	}
	slices.Sort(out)
	return out
}

func (a *account) deleteGroup(ctx context.Context, actor string, m *adminv1.DeleteGroupRequest) (*adminv1.DeleteGroupResponse, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	g, err := a.groupRef(m.Id)
	if err != nil {
		return nil, err
	}
	if g.IsAll {
		return nil, conflictf("group %s holds every peer; it cannot be deleted", g.Name)
	}
	if err := a.idpGroupEdit(g); err != nil {
		return nil, err
	}
	if users := a.groupUsers(g.ID); len(users) > 0 {
		return nil, conflictf("group %s is used by %s; remove it there first", g.Name, strings.Join(users, ", "))
	}
	changed := a.setMembers(g.ID, nil)
	// No policy, route or nameserver group names it: no map changes.
	err = a.commit(ctx, audit{actor: actor, action: "group.deleted", targetType: "group", targetID: g.ID, targetName: g.Name},
		func(tx *store.Tx) error { return tx.DeleteGroup(g.ID) },
		func() {
			delete(a.groups, g.ID)
			for _, p := range changed {
				a.putPeer(p)
			}
		},
		netmap.Change{})
	if err != nil {
		return nil, err
	}
	return &adminv1.DeleteGroupResponse{}, nil
}

func (a *account) keyMsg(k *store.SetupKey, now time.Time) *adminv1.SetupKey {
	return &adminv1.SetupKey{Id: k.ID, Name: k.Name, Prefix: k.Prefix, OneOff: k.OneOff, Expires: ts(k.Expires),
		UsageLimit: int32(k.UsageLimit), Used: int32(k.Used), Revoked: k.Revoked, AutoGroups: a.groupNames(k.AutoGroups),
		Ephemeral: k.Ephemeral, LastUsed: ts(k.LastUsed), Created: ts(k.Created), State: keyState(k, now)}
}

func (a *account) keyRef(ref string) (*store.SetupKey, error) {
	return find(a.keys, ref, "setup key", "setup-keys", func(k *store.SetupKey) []string { return []string{k.Name, k.Prefix} })
}

func (a *account) listSetupKeys(ctx context.Context, actor string, m *adminv1.ListSetupKeysRequest) (*adminv1.ListSetupKeysResponse, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	now := a.s.now()
	out := &adminv1.ListSetupKeysResponse{}
	for _, k := range sorted(a.keys, func(k *store.SetupKey) (time.Time, string) { return k.Created, k.ID }) {
		out.SetupKeys = append(out.SetupKeys, a.keyMsg(k, now))
	}
	return out, nil
}

func (a *account) getSetupKey(ctx context.Context, actor string, m *adminv1.GetSetupKeyRequest) (*adminv1.SetupKey, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	k, err := a.keyRef(m.Id)
	if err != nil {
		return nil, err
	}
	return a.keyMsg(k, a.s.now()), nil
}

// newSetupKey returns a random key, "XXXXXXXX-XXXXXXXX-XXXXXXXX-XXXXXXXX"
// (160 random bits).
func newSetupKey() string {
	var b [20]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("control: crypto/rand: " + err.Error())
	}
	s := strings.ToUpper(idEncoding.EncodeToString(b[:]))
	return s[0:8] + "-" + s[8:16] + "-" + s[16:24] + "-" + s[24:32]
}

// createKey makes a setup key; the plaintext is returned once. Callers
// hold mu.
func (a *account) createKeyLocked(ctx context.Context, actor string, m *adminv1.CreateSetupKeyRequest) (*store.SetupKey, string, error) {
	id := newID()
	name := strings.TrimSpace(m.Name)
	if name == "" {
		// Distinct by default, so that lists, events and refusals tell
		// keys apart.
		name = "key-" + id[:6]
	}
	name, err := checkName("setup key", name)
	if err != nil {
		return nil, "", err
	}
	expiry, err := checkSeconds("setup key expiry", m.ExpiresInSeconds, "never expires", minSetupKeyExpiry, maxSetupKeyExpiry)
	if err != nil {
		return nil, "", err
	}
	if err := checkCount("setup key usage limit", int64(m.UsageLimit), 0, maxSetupKeyUsage, " (0: unlimited)"); err != nil {
		return nil, "", err
	}
	if m.OneOff && m.UsageLimit > 1 {
		return nil, "", invalidf("a one-off key is used once; do not give it a usage limit of %d", m.UsageLimit)
	}
	groups, err := a.groupIDs(m.AutoGroups, true)
	if err != nil {
		return nil, "", err
	}
	plain := newSetupKey()
	now := a.s.now()
	k := &store.SetupKey{ID: id, AccountID: a.id, Name: name, Hash: hashSecret(plain), Prefix: plain[:8],
		OneOff: m.OneOff, UsageLimit: int(m.UsageLimit), Ephemeral: m.Ephemeral, Created: a.stamp(), AutoGroups: groups}
	if expiry > 0 {
		k.Expires = now.Add(expiry)
	}
	kind := "reusable"
	if k.OneOff {
		kind = "one-off"
	}
	err = a.commit(ctx, audit{actor: actor, action: "setup_key.created", targetType: "setup_key", targetID: k.ID,
		targetName: k.Name, detail: kind + ", prefix " + k.Prefix},
		func(tx *store.Tx) error { return tx.PutSetupKey(*k) },
		func() { a.putKey(k) },
		netmap.Change{})
	if err != nil {
		return nil, "", err
	}
	return k, plain, nil
}

func (a *account) createSetupKey(ctx context.Context, actor string, m *adminv1.CreateSetupKeyRequest) (*adminv1.SetupKey, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	k, plain, err := a.createKeyLocked(ctx, actor, m)
	if err != nil {
		return nil, err
	}
	msg := a.keyMsg(k, a.s.now())
	msg.Key = plain
	if a.s.opts.PublicURL != "" {
		msg.JoinToken = a.s.joinToken(plain).Encode()
		msg.JoinCommand = JoinCommand(msg.JoinToken)
	}
	return msg, nil
}

func (a *account) updateSetupKey(ctx context.Context, actor string, m *adminv1.UpdateSetupKeyRequest) (*adminv1.SetupKey, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	k, err := a.keyRef(m.Id)
	if err != nil {
		return nil, err
	}
	nk := *k
	action, details := "setup_key.updated", []string{}
	if m.Name != nil {
		if nk.Name, err = checkName("setup key", *m.Name); err != nil {
			return nil, err
		}
		details = append(details, "name "+nk.Name)
	}
	if m.Revoked != nil {
		nk.Revoked = *m.Revoked
		if nk.Revoked && !k.Revoked {
			action = "setup_key.revoked"
		}
		details = append(details, map[bool]string{true: "revoked", false: "not revoked"}[nk.Revoked])
	}
	if m.AutoGroups != nil {
		if nk.AutoGroups, err = a.groupIDs(m.AutoGroups.Values, true); err != nil {
			return nil, err
		}
		details = append(details, "auto groups "+strings.Join(a.groupNames(nk.AutoGroups), ","))
	}
	err = a.commit(ctx, audit{actor: actor, action: action, targetType: "setup_key", targetID: k.ID, targetName: nk.Name,
		detail: strings.Join(details, ", ")},
		func(tx *store.Tx) error { return tx.PutSetupKey(nk) },
		func() { a.putKey(&nk) },
		netmap.Change{})
	if err != nil {
		return nil, err
	}
	return a.keyMsg(&nk, a.s.now()), nil
}

func (a *account) deleteSetupKey(ctx context.Context, actor string, m *adminv1.DeleteSetupKeyRequest) (*adminv1.DeleteSetupKeyResponse, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	k, err := a.keyRef(m.Id)
	if err != nil {
		return nil, err
	}
	var peers []*store.Peer
	for _, p := range a.peers {
		if p.SetupKeyID == k.ID {
			np := *p
			np.SetupKeyID = ""
			peers = append(peers, &np)
		}
	}
	err = a.commit(ctx, audit{actor: actor, action: "setup_key.deleted", targetType: "setup_key", targetID: k.ID, targetName: k.Name},
		func(tx *store.Tx) error { return tx.DeleteSetupKey(k.ID) }, // peers keep joining info: SET NULL
		func() {
			delete(a.keys, k.ID)
			delete(a.keyHash, string(k.Hash))
			for _, p := range peers {
				a.putPeer(p)
			}
		},
		netmap.Change{})
	if err != nil {
		return nil, err
	}
	return &adminv1.DeleteSetupKeyResponse{}, nil
}
