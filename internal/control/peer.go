package control

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"connectrpc.com/connect"
	"go.uber.org/zap"
	"google.golang.org/protobuf/types/known/timestamppb"

	controlv1 "meshd/api/control/v1"
	"meshd/api/control/v1/controlv1connect"
	"meshd/internal/cluster"
	"meshd/internal/keys"
	"meshd/internal/netmap"
	"meshd/internal/seal"
	"meshd/store"
)

// peerAPI is the agent-facing Connect service.
type peerAPI struct{ s *Service }

var _ controlv1connect.ControlServiceHandler = (*peerAPI)(nil)

// Challenge issues a key-proof challenge. It is kept in the cluster's
// one-time tokens, so that the proof may go to any replica, once. While the
// cluster is unreachable, the challenge is one of this replica's own
// (s.local), valid here only.
func (p *peerAPI) Challenge(ctx context.Context, _ *connect.Request[controlv1.ChallengeRequest]) (*connect.Response[controlv1.ChallengeResponse], error) {
	s := p.s
	ch, exp := s.challenger.Issue(s.now())
	if err := s.cl.PutOnce(ctx, challengeKey(ch), exp); err != nil {
		s.faultLog(s.log, err)("share a challenge with the other replicas; it is valid on this one only", zap.Error(err))
		ch, exp = s.local.Issue(s.now())
	}
	pub := s.key.Public()
	return connect.NewResponse(&controlv1.ChallengeResponse{ServerPublicKey: pub[:], Challenge: ch,
		Expires: timestamppb.New(exp)}), nil
}

func challengeKey(ch []byte) string { return "challenge:" + hex.EncodeToString(ch) }

// useChallenge accepts a challenge issued by any replica that has not
// expired and was not used before, and uses it up.
func (s *Service) useChallenge(ctx context.Context, ch []byte) bool {
	now := s.now()
	if s.local.Use(ch, now) == nil {
		return true // this replica's own, issued while the cluster was unreachable
	}
	ok, err := s.cl.TakeOnce(ctx, challengeKey(ch), now)
	if err != nil {
		s.faultLog(s.log, err)("check a challenge", zap.Error(err))
	}
	return ok && err == nil
}

// verify checks a proof made for purpose and returns the proven key.
func (s *Service) verify(ctx context.Context, pr *controlv1.Proof, purpose string) (keys.Key, error) {
	if pr == nil {
		return keys.Key{}, refuseProof.err("no proof")
	}
	pub, err := keys.FromBytes(pr.PublicKey)
	if err != nil {
		return keys.Key{}, refuseProof.err("public key is not 32 bytes")
	}
	if err := pub.CheckPublic(); err != nil {
		return keys.Key{}, refuseProof.err(err.Error() + "; use the key pair meshd generated")
	}
	if !s.useChallenge(ctx, pr.Challenge) {
		return keys.Key{}, refuseProof.err("challenge unknown, expired or used; ask for a new one")
	}
	if err := seal.VerifyProof(purpose, pr.Challenge, pr.Nonce, pr.Sealed, pub, s.key); err != nil {
		return keys.Key{}, refuseProof.err("the proof was not made with the private key of " + pub.String())
	}
	return pub, nil
}

func (p *peerAPI) Login(ctx context.Context, req *connect.Request[controlv1.LoginRequest]) (*connect.Response[controlv1.LoginResponse], error) {
	s := p.s
	pub, err := s.verify(ctx, req.Msg.Proof, seal.PurposeLogin)
	if err != nil {
		return nil, err
	}
	meta, err := checkMeta(req.Msg.Meta)
	if err != nil {
		return nil, err
	}
	if meta == nil {
		meta = &controlv1.PeerMeta{}
	}
	setupKey := strings.TrimSpace(req.Msg.SetupKey) // pasted keys come with spaces and newlines
	if len(setupKey) > maxSetupKeyLen {
		return nil, refuseKeyUnknown.err(fmt.Sprintf("%d bytes long; setup keys have 35", len(setupKey)))
	}
	a, peer := s.peerByKey(pub.String())
	var self *controlv1.SelfConfig
	switch {
	case peer != nil:
		self, err = a.relogin(ctx, peer.ID, setupKey, meta)
	case setupKey == "":
		return nil, refusePeerUnknown.err("")
	default:
		hash := hashSecret(setupKey)
		if a = s.accountByKeyHash(hash); a == nil {
			return nil, refuseKeyUnknown.err("")
		}
		self, err = a.register(ctx, pub.String(), hash, meta)
	}
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&controlv1.LoginResponse{Self: self}), nil
}

func hashSecret(s string) []byte {
	h := sha256.Sum256([]byte(s))
	return h[:]
}

// useKey checks that setup key k may register a peer now, returning the
// refusal when not. Callers hold mu.
func useKey(k *store.SetupKey, now time.Time) error {
	switch {
	case k.Revoked:
		return refuseKeyRevoked.err(keyDetail(k))
	case !k.Expires.IsZero() && !now.Before(k.Expires):
		return refuseKeyExpired.err(keyDetail(k) + ", at " + k.Expires.UTC().Format(time.RFC3339))
	case k.OneOff && k.Used > 0:
		return refuseKeyUsed.err(keyDetail(k))
	case k.UsageLimit > 0 && k.Used >= k.UsageLimit:
		return refuseKeyLimit.err(fmt.Sprintf("%s, used %d of %d times", keyDetail(k), k.Used, k.UsageLimit))
	}
	return nil
}

// keyDetail names a key in a refusal: `key "laptops"`.
func keyDetail(k *store.SetupKey) string { return fmt.Sprintf("key %q", k.Name) }

// keyState is the admin's word for a setup key's state.
func keyState(k *store.SetupKey, now time.Time) string {
	switch {
	case k.Revoked:
		return "revoked"
	case !k.Expires.IsZero() && !now.Before(k.Expires):
		return "expired"
	case (k.OneOff && k.Used > 0) || (k.UsageLimit > 0 && k.Used >= k.UsageLimit):
		return "used up"
	}
	return "valid"
}

// register adds a new peer with a setup key.
func (a *account) register(ctx context.Context, pub string, hash []byte, meta *controlv1.PeerMeta) (*controlv1.SelfConfig, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for attempt := 1; ; attempt++ {
		sc, err := a.registerLocked(ctx, pub, hash, meta)
		var ce *connect.Error
		switch {
		case err == nil:
			return sc, nil
		case errors.As(err, &ce):
			return nil, ce // a refusal
		case attempt < registerAttempts && !errors.Is(err, cluster.ErrUnavailable):
			// Another replica took the address or name meanwhile: the
			// failed commit reloaded the account, pick again, from
			// elsewhere in the network: both replicas search from after
			// the last address they handed out, so searching on from
			// there would collide with the other replica's next pick.
			a.scatterIP()
			a.log.Info("registration conflicted with another replica's; retrying", zap.Error(err))
		default:
			return nil, peerError(err)
		}
	}
}

// registerAttempts bounds the retries of a registration that conflicted
// with one made at the same time through another replica. Machines that
// join in a burst through several replicas (same hostnames, next free
// addresses) may conflict at every round while the others commit theirs
// in between: three attempts were too few for eight joins per replica.
const registerAttempts = 8

func (a *account) registerLocked(ctx context.Context, pub string, hash []byte, meta *controlv1.PeerMeta) (*controlv1.SelfConfig, error) {
	now := a.s.now()
	if p := a.byKey[pub]; p != nil { // registered by a concurrent login
		return a.selfConfig(p, now), nil
	}
	k := a.keyHash[string(hash)]
	if k == nil {
		return nil, refuseKeyUnknown.err("")
	}
	if err := useKey(k, now); err != nil {
		return nil, err
	}
	ip, ok := a.allocIP()
	if !ok {
		return nil, refuseNetworkFull.err(a.network.String())
	}
	label := a.label(meta.Hostname, "")
	p := &store.Peer{ID: newID(), AccountID: a.id, PublicKey: pub, Name: label, DNSLabel: label,
		OverlayIP: ip.String(), Hostname: meta.Hostname, OS: meta.Os, Version: meta.Version, PostQuantum: meta.PostQuantum, SetupKeyID: k.ID,
		// Login expiration is for people: a machine that joined with a setup
		// key (a server, a routing peer) is not cut off unless an admin opts
		// it in.
		Ephemeral: k.Ephemeral, LoginExpirationEnabled: false, LastLogin: now, LastSeen: now, Created: a.stamp(),
		Groups: a.existingGroups(k.AutoGroups)}
	nk := *k
	nk.Used++
	nk.LastUsed = now
	err := a.commit(ctx, audit{actor: "setup-key:" + k.Name, action: "peer.added", targetType: "peer", targetID: p.ID,
		targetName: p.Name, detail: fmt.Sprintf("ip %s, key %s…", p.OverlayIP, pub[:8])},
		func(tx *store.Tx) error {
			// The key first, counted in the database against its limit
			// (another replica may have used it meanwhile): the peer's row
			// refers to it, and a replica that took the reference's share
			// lock before the key's row lock would deadlock with another
			// replica doing the same.
			if err := tx.UseSetupKey(nk); err != nil {
				return err
			}
			return tx.PutPeer(*p)
		},
		func() { a.putPeer(p); a.putKey(&nk) },
		netmap.Change{Peers: []string{p.ID}})
	if err != nil {
		return nil, err
	}
	a.log.Info("peer joined", zap.String("peer", p.Name), zap.String("ip", p.OverlayIP), zap.String("setup_key", k.Name))
	return a.selfConfig(p, now), nil
}

// existingGroups drops ids of groups deleted since. Callers hold mu.
func (a *account) existingGroups(ids []string) []string {
	var out []string
	for _, id := range ids {
		if g, ok := a.groups[id]; ok && !g.IsAll {
			out = append(out, id)
		}
	}
	return out
}

// relogin logs a known peer in again; with a setup key it renews an
// expired login. A use of the key that another replica's use made stale
// (the failed commit reloaded the account) is tried again.
func (a *account) relogin(ctx context.Context, id, setupKey string, meta *controlv1.PeerMeta) (*controlv1.SelfConfig, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for attempt := 1; ; attempt++ {
		sc, err := a.reloginLocked(ctx, id, setupKey, meta)
		if attempt < registerAttempts && errors.Is(err, store.ErrStale) {
			continue
		}
		return sc, err
	}
}

func (a *account) reloginLocked(ctx context.Context, id, setupKey string, meta *controlv1.PeerMeta) (*controlv1.SelfConfig, error) {
	now := a.s.now()
	p := a.peers[id]
	if p == nil {
		return nil, refusePeerUnknown.err("")
	}
	if err := a.ssoRefusal(p, now); err != nil && (setupKey == "" || a.userOf(id).Blocked) {
		return nil, err
	}
	np := *p
	np.Hostname, np.OS, np.Version = meta.Hostname, meta.Os, meta.Version
	change := netmap.Change{Only: []string{id}} // login_expires may have moved
	if np.PostQuantum != meta.PostQuantum {
		np.PostQuantum = meta.PostQuantum
		change.Entries = []string{id} // its neighbours see it
	}
	ev := audit{actor: "peer:" + p.Name, action: "peer.login", targetType: "peer", targetID: p.ID, targetName: p.Name}
	var nk *store.SetupKey
	if setupKey != "" {
		k := a.keyHash[string(hashSecret(setupKey))]
		if k == nil {
			return nil, refuseKeyUnknown.err("")
		}
		if err := useKey(k, now); err != nil {
			return nil, err
		}
		c := *k
		c.Used++
		c.LastUsed = now
		nk = &c
		np.LastLogin = now
		ev.actor, ev.detail = "setup-key:"+k.Name, "login renewed"
	} else if a.loginExpired(p, now) {
		return nil, refuseLoginExpired.err("")
	}
	err := a.commit(ctx, ev,
		func(tx *store.Tx) error {
			if nk != nil {
				if err := tx.UseSetupKey(*nk); err != nil {
					return err
				}
			}
			return tx.PutPeer(np)
		},
		func() {
			a.putPeer(&np)
			if nk != nil {
				a.putKey(nk)
			}
			delete(a.expired, id) // logged in: a later expiry is a new one
		},
		change)
	if err != nil {
		return nil, peerError(err)
	}
	return a.selfConfig(&np, now), nil
}

func (a *account) selfConfig(p *store.Peer, now time.Time) *controlv1.SelfConfig {
	sc := &controlv1.SelfConfig{PeerId: p.ID, Name: p.Name, DnsName: fqdn(p.DNSLabel, a.a.DNSDomain),
		OverlayIp: p.OverlayIP, OverlayNetwork: a.network.String(), PublicKey: p.PublicKey, Mtu: a.s.mtu()}
	if exp := a.loginExpires(p, now); !exp.IsZero() {
		sc.LoginExpires = timestamppb.New(exp)
	}
	return sc
}

func fqdn(label, domain string) string {
	if domain == "" {
		return label
	}
	return label + "." + domain
}

func (s *Service) mtu() uint32 {
	if s.opts.MTU == 0 {
		return netmap.DefaultMTU
	}
	return s.opts.MTU
}

// Sync streams the peer's maps until the peer goes away, control stops,
// the peer is deleted or its login expires.
func (p *peerAPI) Sync(ctx context.Context, req *connect.Request[controlv1.SyncRequest], stream *connect.ServerStream[controlv1.SyncResponse]) error {
	s := p.s
	pub, err := s.verify(ctx, req.Msg.Proof, seal.PurposeSync)
	if err != nil {
		return err
	}
	a, peer := s.peerByKey(pub.String())
	if peer == nil {
		return refusePeerUnknown.err("")
	}
	if !s.streamStarted() {
		return connect.NewError(connect.CodeUnavailable, errors.New("control is shutting down"))
	}
	defer s.streams.Done()
	meta, err := checkMeta(req.Msg.Meta)
	if err != nil {
		return err
	}
	c, err := a.goOnline(peer.ID, meta, req.Msg.AcceptUpdates)
	if err != nil {
		return err
	}
	defer a.goOffline(c)
	return s.stream(ctx, a, c, pub, stream)
}

func (s *Service) stream(ctx context.Context, a *account, c *conn, pub keys.Key, stream *connect.ServerStream[controlv1.SyncResponse]) error {
	heartbeat := time.NewTicker(s.opts.Heartbeat)
	defer heartbeat.Stop()
	refresh := time.NewTimer(time.Hour)
	refresh.Stop()
	defer refresh.Stop()
	// What the agent holds: the map of generation sentGen, serial sentSerial.
	var sentSerial, sentGen uint64
	// serialAbove returns serial when it is above the one sent last, else
	// a fresh one.
	serialAbove := func(serial uint64) uint64 {
		if serial > sentSerial {
			return serial
		}
		return a.dist.takeSerials(ctx, 1)
	}
	sendMap := func(serial uint64) error {
		c.take() // the map covers every round up to the index it is made from
		start := time.Now()
		snap := a.dist.indexWith(c.peerID)
		m := snap.ix.Map(c.peerID)
		s.m.mapComputed(time.Since(start))
		if m == nil {
			if err := a.hiddenRefusal(c.peerID); err != nil {
				return err // blocked or expired before the janitor said so
			}
			return refusePeerUnknown.err("deleted")
		}
		serial = serialAbove(serial)
		m.Serial = serial
		m.ControlUrls = s.controlURLs()
		var exp, ticketExp time.Time
		m.Relays, exp = s.relays(c.peerID)
		m.SignalUrl, m.SignalTlsPin = s.opts.SignalURL, s.opts.SignalPin
		m.SignalTicket, ticketExp = s.ticket(a, pub)
		if exp.IsZero() || (!ticketExp.IsZero() && ticketExp.Before(exp)) {
			exp = ticketExp
		}
		if err := stream.Send(&controlv1.SyncResponse{Map: m}); err != nil {
			return err
		}
		s.m.sent(mapKindFull, m)
		sentSerial, sentGen = serial, snap.gen
		if !exp.IsZero() {
			// Refresh at half the credential's lifetime: the agent's
			// relay sessions sign their TURN refreshes with the newest
			// credential, and half a lifetime leaves room for a slow
			// stream or a reconnect before the old one expires.
			refresh.Reset(max(time.Second, exp.Sub(s.now())/2))
		}
		return nil
	}
	// sendBox sends what the mailbox asks for: nothing when its rounds are
	// all covered by the map sent last, else an update when it holds
	// entries only and each can be given cheaply, else the whole map.
	sendBox := func() error {
		b := c.take()
		if b.snap == nil || b.snap.gen <= sentGen {
			return nil
		}
		if b.full {
			return sendMap(b.serial)
		}
		u, ok := updateFrom(b, c.peerID, sentSerial)
		if !ok {
			return sendMap(b.serial)
		}
		serial := serialAbove(b.serial)
		u.Serial = serial
		if err := stream.Send(&controlv1.SyncResponse{Update: u}); err != nil {
			return err
		}
		s.m.sent(mapKindUpdate, u)
		sentSerial, sentGen = serial, b.snap.gen
		return nil
	}
	if err := sendMap(0); err != nil {
		return err
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-s.ctx.Done():
			return connect.NewError(connect.CodeUnavailable, errors.New("control is shutting down"))
		case err := <-c.kick:
			return err
		case <-c.wake:
			if err := sendBox(); err != nil {
				return err
			}
		case <-refresh.C:
			if err := sendMap(0); err != nil {
				return err
			}
		case <-heartbeat.C:
			if err := stream.Send(&controlv1.SyncResponse{}); err != nil {
				return err
			}
		}
	}
}

// updateFrom builds the update that turns peer self's map of the index
// before the mailbox's rounds (serial base) into that of the mailbox's
// index: each posted peer's entry, or its removal when the map does not list
// it. ok is false when an entry cannot be given cheaply (see
// netmap.Index.Entry): then the whole map goes. Entries come in key order.
func updateFrom(b mailbox, self string, base uint64) (*controlv1.MapUpdate, bool) {
	u := &controlv1.MapUpdate{BaseSerial: base}
	for x := range b.entries {
		rp, listed, ok := b.snap.ix.Entry(self, x)
		if !ok {
			return nil, false
		}
		if listed {
			u.UpsertPeers = append(u.UpsertPeers, rp)
		} else {
			u.RemovedPeerKeys = append(u.RemovedPeerKeys, rp.PublicKey)
		}
	}
	slices.SortFunc(u.UpsertPeers, func(p, q *controlv1.RemotePeer) int { return strings.Compare(p.PublicKey, q.PublicKey) })
	slices.Sort(u.RemovedPeerKeys)
	return u, true
}

// goOnline registers a stream of peer id: the peer is online while it has
// one. Its meta is updated when it changed.
func (a *account) goOnline(id string, meta *controlv1.PeerMeta, updates bool) (*conn, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	now := a.s.now()
	p := a.peers[id]
	if p == nil {
		return nil, refusePeerUnknown.err("")
	}
	if err := a.ssoRefusal(p, now); err != nil {
		return nil, err
	}
	if a.loginExpired(p, now) {
		return nil, refuseLoginExpired.err("")
	}
	pqChanged := meta != nil && meta.PostQuantum != p.PostQuantum
	if meta != nil && (meta.Hostname != p.Hostname || meta.Os != p.OS || meta.Version != p.Version || pqChanged) && a.s.refused() == nil {
		np := *p
		np.Hostname, np.OS, np.Version, np.PostQuantum = meta.Hostname, meta.Os, meta.Version, meta.PostQuantum
		err := a.s.st.Write(context.Background(), func(tx *store.Tx) error { return tx.PutPeer(np) })
		switch {
		case a.s.fault(err):
			// The stream is served anyway; the meta waits for the next one.
			a.log.Warn("record peer meta", zap.String("peer", p.Name), zap.Error(err))
		case err != nil:
			return nil, connect.NewError(connect.CodeInternal, err)
		default:
			a.putPeer(&np)
			a.s.publish(busMsg{Account: a.id, Kind: kindAccount})
		}
	}
	c := a.dist.attach(id, updates)
	a.online[id]++
	if a.online[id] == 1 {
		a.setPresent(id, true, time.Time{})
		if !a.remote[id] || pqChanged {
			a.change(netmap.Change{Entries: []string{id}}) // online, or post-quantum support
		}
		delete(a.remote, id) // counted here while it streams here
	} else if pqChanged {
		a.change(netmap.Change{Entries: []string{id}}) // post-quantum support
	}
	return c, nil
}

// goOffline unregisters a stream; the peer's last-seen time is recorded when
// its last stream ends.
func (a *account) goOffline(c *conn) {
	a.dist.detach(c)
	a.mu.Lock()
	defer a.mu.Unlock()
	p := a.peers[c.peerID]
	if p == nil {
		return // deleted
	}
	a.online[c.peerID]--
	if a.online[c.peerID] > 0 {
		return
	}
	delete(a.online, c.peerID)
	np := *p
	np.LastSeen = a.s.now()
	if a.s.refused() == nil {
		if err := a.s.st.SetPeerLastSeen(context.Background(), np.ID, np.LastSeen); err != nil {
			a.s.faultLog(a.log, err)("record last seen", zap.String("peer", np.Name), zap.Error(err))
		}
	}
	a.putPeer(&np)
	a.setPresent(np.ID, false, np.LastSeen)
	// Still online when another replica holds a stream of it (an agent
	// that moved).
	ctx, cancel := context.WithTimeout(a.s.ctx, presenceTimeout)
	defer cancel()
	if elsewhere, err := a.s.presentElsewhere(ctx, np.ID); err == nil && elsewhere {
		a.remote[np.ID] = true
	}
	a.change(netmap.Change{Entries: []string{np.ID}}) // offline, last seen
}
