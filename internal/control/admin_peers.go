package control

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	adminv1 "meshd/api/admin/v1"
	"meshd/internal/netmap"
	"meshd/store"
)

func (a *account) accountMsg() *adminv1.Account {
	return &adminv1.Account{Id: a.a.ID, Name: a.a.Name, OverlayNetwork: a.network.String(), DnsDomain: a.a.DNSDomain,
		LoginExpirationSeconds:  int64(a.a.LoginExpiration / time.Second),
		EphemeralOfflineSeconds: int64(a.a.EphemeralOffline / time.Second), Created: ts(a.a.Created),
		LoginExpiredPeers: int32(a.loginExpiredCount(a.s.now())), PostQuantum: pqMode(a.a.PostQuantum)}
}

func (a *account) getAccount(ctx context.Context, actor string, m *adminv1.GetAccountRequest) (*adminv1.Account, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.accountMsg(), nil
}

func (a *account) updateAccount(ctx context.Context, actor string, m *adminv1.UpdateAccountRequest) (*adminv1.Account, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	na, network := a.a, a.network
	var changes []string
	if m.Name != nil {
		n, err := checkName("account", *m.Name)
		if err != nil {
			return nil, err
		}
		na.Name = n
		changes = append(changes, "name")
	}
	if m.OverlayNetwork != nil {
		p, err := a.checkOverlay(*m.OverlayNetwork)
		if err != nil {
			return nil, err
		}
		var outside []string
		for _, peer := range a.peers {
			if !p.Contains(netip.MustParseAddr(peer.OverlayIP)) {
				outside = append(outside, peer.Name)
			}
		}
		if len(outside) > 0 {
			slices.Sort(outside)
			return nil, conflictf("overlay network %s does not contain the addresses of %s (%s); choose a network that does",
				p, plural(len(outside), "peer"), strings.Join(outside[:min(5, len(outside))], ", "))
		}
		network = p
		na.OverlayNetwork = p.String()
		changes = append(changes, "overlay network "+p.String())
	}
	if m.DnsDomain != nil {
		d, err := checkMeshDomain(*m.DnsDomain)
		if err != nil {
			return nil, err
		}
		for _, r := range a.records {
			if err := a.checkRecordName(r, d); err != nil {
				return nil, err
			}
		}
		na.DNSDomain = d
		changes = append(changes, "dns domain "+d)
	}
	if m.LoginExpirationSeconds != nil {
		d, err := checkSeconds("login expiration", *m.LoginExpirationSeconds, "off", minLoginExpiration, maxLoginExpiration)
		if err != nil {
			return nil, err
		}
		na.LoginExpiration = d
		changes = append(changes, "login expiration "+na.LoginExpiration.String())
	}
	if m.EphemeralOfflineSeconds != nil {
		d, err := checkSeconds("ephemeral offline time", *m.EphemeralOfflineSeconds, "", minEphemeralOffline, maxEphemeralOffline)
		if err != nil {
			return nil, err
		}
		na.EphemeralOffline = d
		changes = append(changes, "ephemeral offline "+na.EphemeralOffline.String())
	}
	if m.PostQuantum != nil {
		mode, err := checkPostQuantum(*m.PostQuantum)
		if err != nil {
			return nil, err
		}
		na.PostQuantum = mode
		changes = append(changes, "post-quantum "+mode)
	}
	err := a.commit(ctx, audit{actor: actor, action: "account.updated", targetType: "account", targetID: a.id,
		targetName: na.Name, detail: strings.Join(changes, ", ")},
		func(tx *store.Tx) error { return tx.PutAccount(na) },
		func() {
			na.Serial = a.a.Serial
			a.a, a.network = na, network
		},
		netmap.Change{All: true})
	if err != nil {
		return nil, err
	}
	return a.accountMsg(), nil
}

func (a *account) peerMsg(p *store.Peer, now time.Time) *adminv1.Peer {
	exp := a.loginExpires(p, now)
	user, userID := a.peerUserName(p.ID)
	return &adminv1.Peer{User: user, UserId: userID, Id: p.ID, Name: p.Name, DnsName: fqdn(p.DNSLabel, a.a.DNSDomain), OverlayIp: p.OverlayIP,
		PublicKey: p.PublicKey, Hostname: p.Hostname, Os: p.OS, Version: p.Version,
		Groups: append([]string{a.all.Name}, a.groupNames(p.Groups)...), Online: a.isOnline(p.ID),
		LastSeen: ts(p.LastSeen), LoginExpirationEnabled: p.LoginExpirationEnabled, LoginExpires: ts(exp),
		Ephemeral: p.Ephemeral, Created: ts(p.Created), SetupKeyId: p.SetupKeyID, Paths: a.pathsOf(p, now)}
}

func (a *account) listPeers(ctx context.Context, actor string, m *adminv1.ListPeersRequest) (*adminv1.ListPeersResponse, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	now := a.s.now()
	out := &adminv1.ListPeersResponse{}
	for _, p := range a.peers {
		out.Peers = append(out.Peers, a.peerMsg(p, now))
	}
	slices.SortFunc(out.Peers, func(x, y *adminv1.Peer) int {
		return netip.MustParseAddr(x.OverlayIp).Compare(netip.MustParseAddr(y.OverlayIp))
	})
	return out, nil
}

func (a *account) getPeer(ctx context.Context, actor string, m *adminv1.GetPeerRequest) (*adminv1.Peer, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	p, err := a.peerRef(m.Id)
	if err != nil {
		return nil, err
	}
	return a.peerMsg(p, a.s.now()), nil
}

func (a *account) updatePeer(ctx context.Context, actor string, m *adminv1.UpdatePeerRequest) (*adminv1.Peer, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	p, err := a.peerRef(m.Id)
	if err != nil {
		return nil, err
	}
	np := *p
	var changes []string
	if m.Name != nil {
		name, err := checkName("peer", *m.Name)
		if err != nil {
			return nil, err
		}
		label := dnsLabel(name)
		if other, taken := a.byLabel[label]; taken && other.ID != p.ID {
			return nil, conflictf("peer name %q: DNS name %s is taken by peer %s", name, label, other.Name)
		}
		if r := a.recordAt(label); r != nil {
			return nil, conflictf("peer name %q: DNS name %s is taken by the dns record %s; delete or rename the record first", name, label, r.Name)
		}
		np.Name, np.DNSLabel = name, label
		changes = append(changes, "name "+name)
	}
	if m.Groups != nil {
		ids, err := a.groupIDs(m.Groups.Values, true)
		if err != nil {
			return nil, err
		}
		if err := a.idpMembershipEdit(p.Groups, ids); err != nil {
			return nil, err
		}
		np.Groups = ids
		changes = append(changes, "groups "+strings.Join(a.groupNames(ids), ","))
	}
	if m.LoginExpirationEnabled != nil {
		np.LoginExpirationEnabled = *m.LoginExpirationEnabled
		changes = append(changes, fmt.Sprintf("login expiration %v", np.LoginExpirationEnabled))
	}
	err = a.commit(ctx, audit{actor: actor, action: "peer.updated", targetType: "peer", targetID: p.ID, targetName: np.Name,
		detail: strings.Join(changes, ", ")},
		func(tx *store.Tx) error { return tx.PutPeer(np) },
		func() { a.putPeer(&np) },
		// A rename changes only the peer's entry in its neighbours' maps;
		// Impacts treats a change of groups as what it is.
		netmap.Change{Entries: []string{p.ID}})
	if err != nil {
		return nil, err
	}
	return a.peerMsg(&np, a.s.now()), nil
}

func (a *account) deletePeer(ctx context.Context, actor string, m *adminv1.DeletePeerRequest) (*adminv1.DeletePeerResponse, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	p, err := a.peerRef(m.Id)
	if err != nil {
		return nil, err
	}
	if err := a.removePeerLocked(ctx, actor, p, "deleted by an admin"); err != nil {
		return nil, err
	}
	return &adminv1.DeletePeerResponse{}, nil
}

// removePeerLocked deletes a peer: its address and name become free, it
// leaves its routes, and its streams end with "peer unknown".
func (a *account) removePeerLocked(ctx context.Context, actor string, p *store.Peer, why string) error {
	var routes []*store.Route
	for _, r := range a.routes {
		if slices.Contains(r.Peers, p.ID) {
			nr := *r
			nr.Peers = slices.DeleteFunc(slices.Clone(r.Peers), func(id string) bool { return id == p.ID })
			routes = append(routes, &nr)
		}
	}
	err := a.commit(ctx, audit{actor: actor, action: "peer.deleted", targetType: "peer", targetID: p.ID,
		targetName: p.Name, detail: why + ", ip " + p.OverlayIP},
		func(tx *store.Tx) error { return tx.DeletePeer(p.ID) }, // route_peers and group_peers cascade
		func() {
			a.removePeer(p)
			for _, r := range routes {
				a.routes[r.ID] = r
			}
		},
		netmap.Change{Peers: []string{p.ID}})
	if err != nil {
		return err
	}
	a.dist.kick(p.ID, refusePeerUnknown.err(why))
	return nil
}
