package control

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/base32"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"meshd/internal/cluster"
	"meshd/internal/netmap"
	"meshd/store"
)

// account is the in-memory, authoritative state of one account. Maps are
// computed from it (through an immutable netmap.Index), never from the
// database; every change is written through to the store first.
//
// Entities are immutable values behind pointers: a change replaces the
// pointer, so a snapshot taken under mu stays valid after mu is released.
type account struct {
	s   *Service
	id  string
	log *zap.Logger

	mu       sync.Mutex // guards everything down to pending
	a        store.Account
	network  netip.Prefix
	peers    map[string]*store.Peer
	byKey    map[string]*store.Peer // public key → peer
	byLabel  map[string]*store.Peer
	byIP     map[netip.Addr]*store.Peer
	groups   map[string]*store.Group
	all      *store.Group
	keys     map[string]*store.SetupKey
	keyHash  map[string]*store.SetupKey // string(hash) → key
	policies map[string]*store.Policy
	routes   map[string]*store.Route
	ns       map[string]*store.NameserverGroup
	records  map[string]*store.DNSRecord
	online   map[string]int  // peer id → open Sync streams on this replica
	remote   map[string]bool // peers with a stream on another replica
	// expired holds the peers whose login expiry is recorded in the audit
	// log (with when it expired), so that each expiry is recorded once.
	expired map[string]time.Time
	nextIP  netip.Addr    // where the search for a free address starts
	lastNew time.Time     // creation time of the newest entity (see stamp)
	pending netmap.Change // not yet pushed
	dirty   bool

	dist distributor
	sso  ssoState // users (users.go)
}

func newAccount(s *Service, d *store.AccountData) (*account, error) {
	a := &account{
		s:       s,
		id:      d.Account.ID,
		log:     s.log.With(zap.String("account", d.Account.ID)),
		online:  map[string]int{},
		remote:  map[string]bool{},
		expired: map[string]time.Time{},
	}
	if _, err := a.fill(d); err != nil {
		return nil, err
	}
	a.sso.init(nil) // control's load fills it
	// Expiries before this start were recorded by the start that saw them.
	for _, p := range a.peers {
		if a.loginExpired(p, s.now()) {
			a.expired[p.ID] = a.loginExpires(p, s.now())
		}
	}
	a.nextIP = a.network.Addr().Next()
	a.dist.init(a, d.Account.Serial)
	return a, nil
}

// fill replaces the account's entities with d's: at the start, and when
// another replica changed them (see reload). What is this replica's own
// (its streams, the expiries it recorded) stays. It returns what maps may
// see changed (see diff). Callers hold mu, or own a.
func (a *account) fill(d *store.AccountData) (netmap.Change, error) {
	net, err := netip.ParsePrefix(d.Account.OverlayNetwork)
	if err != nil {
		return netmap.Change{}, fmt.Errorf("account %s: overlay network %q: %w", d.Account.ID, d.Account.OverlayNetwork, err)
	}
	var all *store.Group
	for i := range d.Groups {
		if d.Groups[i].IsAll {
			all = &d.Groups[i]
		}
	}
	if all == nil {
		return netmap.Change{}, fmt.Errorf("account %s has no All group", d.Account.ID)
	}
	for i := range d.Peers {
		p := &d.Peers[i]
		if _, err := netip.ParseAddr(p.OverlayIP); err != nil {
			return netmap.Change{}, fmt.Errorf("account %s: peer %s: overlay ip %q: %w", d.Account.ID, p.Name, p.OverlayIP, err)
		}
	}
	old := &account{a: a.a, peers: a.peers, policies: a.policies, routes: a.routes, ns: a.ns, records: a.records}
	a.a, a.network, a.all = d.Account, net.Masked(), all
	a.peers, a.byKey, a.byLabel, a.byIP = map[string]*store.Peer{}, map[string]*store.Peer{}, map[string]*store.Peer{}, map[netip.Addr]*store.Peer{}
	a.groups, a.keys, a.keyHash = map[string]*store.Group{}, map[string]*store.SetupKey{}, map[string]*store.SetupKey{}
	a.policies, a.routes = map[string]*store.Policy{}, map[string]*store.Route{}
	a.ns, a.records = map[string]*store.NameserverGroup{}, map[string]*store.DNSRecord{}
	for i := range d.Groups {
		a.groups[d.Groups[i].ID] = &d.Groups[i]
	}
	for i := range d.SetupKeys {
		a.putKey(&d.SetupKeys[i])
	}
	for i := range d.Peers {
		a.putPeer(&d.Peers[i])
	}
	for i := range d.Policies {
		a.policies[d.Policies[i].ID] = &d.Policies[i]
	}
	for i := range d.Routes {
		a.routes[d.Routes[i].ID] = &d.Routes[i]
	}
	for i := range d.NameserverGroups {
		a.ns[d.NameserverGroups[i].ID] = &d.NameserverGroups[i]
	}
	for i := range d.DNSRecords {
		a.records[d.DNSRecords[i].ID] = &d.DNSRecords[i]
	}
	for id := range a.online {
		if a.peers[id] == nil {
			delete(a.online, id)
		}
	}
	for id := range a.remote {
		if a.peers[id] == nil {
			delete(a.remote, id)
		}
	}
	if t := newest(d); t.After(a.lastNew) {
		a.lastNew = t
	}
	if old.peers == nil {
		return netmap.Change{}, nil // the first fill
	}
	return a.diff(old), nil
}

func (a *account) putPeer(p *store.Peer) {
	if old := a.peers[p.ID]; old != nil {
		a.dropPeerIndexes(old)
	}
	a.peers[p.ID] = p
	a.byKey[p.PublicKey] = p
	a.byLabel[p.DNSLabel] = p
	a.byIP[netip.MustParseAddr(p.OverlayIP)] = p
}

func (a *account) dropPeerIndexes(p *store.Peer) {
	delete(a.byKey, p.PublicKey)
	delete(a.byLabel, p.DNSLabel)
	delete(a.byIP, netip.MustParseAddr(p.OverlayIP))
}

func (a *account) removePeer(p *store.Peer) {
	a.dropPeerIndexes(p)
	delete(a.peers, p.ID)
	delete(a.online, p.ID)
	delete(a.remote, p.ID)
}

// isOnline: the peer has a stream open on some replica. Callers hold mu.
func (a *account) isOnline(id string) bool { return a.online[id] > 0 || a.remote[id] }

// onlineCount is how many peers are online on any replica. Callers hold mu.
func (a *account) onlineCount() int {
	n := len(a.online)
	for id := range a.remote {
		if a.online[id] == 0 {
			n++
		}
	}
	return n
}

func (a *account) putKey(k *store.SetupKey) {
	if old := a.keys[k.ID]; old != nil {
		delete(a.keyHash, string(old.Hash))
	}
	a.keys[k.ID] = k
	a.keyHash[string(k.Hash)] = k
}

// change records what an edit touched and wakes the distributor. Callers
// hold mu.
func (a *account) change(c netmap.Change) {
	a.pending.Merge(c)
	a.dirty = true
	a.dist.wake()
}

// audit is an event about to be written.
type audit struct {
	actor, action, targetType, targetID, targetName, detail string
}

// commit writes an edit through to the store with its audit event, then
// applies it in memory and records what it touched. Callers hold mu, so
// edits of one account are serial and the store never lags memory.
//
// The other replicas are told (see publish) and reload the account. A
// change is refused while the database is lost; one that fails otherwise
// (another replica's change conflicted with it) reloads the account, so
// that a retry sees what the store holds.
func (a *account) commit(ctx context.Context, ev audit, write func(*store.Tx) error, apply func(), c netmap.Change) error {
	if err := a.s.refused(); err != nil {
		return fmt.Errorf("%s: %w", ev.action, err)
	}
	err := a.s.st.Write(ctx, func(tx *store.Tx) error {
		if write != nil {
			if err := write(tx); err != nil {
				return err
			}
		}
		return tx.AddEvent(store.Event{AccountID: a.id, Time: a.s.now(), Actor: ev.actor, Action: ev.action,
			TargetType: ev.targetType, TargetID: ev.targetID, TargetName: ev.targetName, Detail: ev.detail})
	})
	if err != nil {
		if err := a.s.storeError(err); errors.Is(err, cluster.ErrUnavailable) {
			return fmt.Errorf("%s: %w", ev.action, err)
		}
		a.reloadLocked(ctx)
		return fmt.Errorf("%s: %w", ev.action, err)
	}
	if apply != nil {
		apply()
	}
	if !c.Empty() {
		a.change(c)
	}
	a.s.publish(busMsg{Account: a.id, Kind: kindAccount, Change: c})
	return nil
}

// reloadLocked takes the account from the store again after a write failed:
// memory may lag a change of another replica. Callers hold mu.
func (a *account) reloadLocked(ctx context.Context) {
	d, err := a.s.st.LoadAccount(context.WithoutCancel(ctx), a.id)
	if err != nil {
		a.s.fault(err)
		return
	}
	c, err := a.fill(d)
	if err != nil {
		a.log.Error("reload account", zap.Error(err))
		return
	}
	a.change(c)
}

// input snapshots what maps depend on. Callers hold mu. Lists are sorted by
// creation so that maps come out in a stable order.
func (a *account) input() *netmap.Input {
	in := &netmap.Input{Settings: netmap.Settings{Domain: a.a.DNSDomain, Network: a.network, MTU: a.s.opts.MTU,
		PostQuantum: pqMapMode(a.a.PostQuantum)}}
	now := a.s.now()
	in.Peers = make([]netmap.Peer, 0, len(a.peers))
	for _, p := range a.peers {
		if a.ssoHidden(p, now) {
			continue
		}
		in.Peers = append(in.Peers, netmap.Peer{ID: p.ID, Key: p.PublicKey, Name: p.Name, Label: p.DNSLabel,
			IP: netip.MustParseAddr(p.OverlayIP), Groups: p.Groups, Online: a.isOnline(p.ID), LastSeen: p.LastSeen,
			LoginExpires: a.loginExpires(p, now), PostQuantum: p.PostQuantum})
	}
	for _, g := range sorted(a.groups, func(g *store.Group) (time.Time, string) { return g.Created, g.ID }) {
		in.Groups = append(in.Groups, netmap.Group{ID: g.ID, Name: g.Name, All: g.IsAll})
	}
	for _, p := range sorted(a.policies, func(p *store.Policy) (time.Time, string) { return p.Created, p.ID }) {
		proto, _ := netmap.ParseProtocol(p.Protocol) // validated on the way in
		ports, _ := netmap.ParsePorts(proto, p.Ports)
		in.Policies = append(in.Policies, netmap.Policy{ID: p.ID, Enabled: p.Enabled, Sources: p.Sources,
			Destinations: p.Destinations, Protocol: proto, Ports: ports, Bidirectional: p.Bidirectional})
	}
	for _, r := range sorted(a.routes, func(r *store.Route) (time.Time, string) { return r.Created, r.ID }) {
		net, _ := netip.ParsePrefix(r.Network)
		in.Routes = append(in.Routes, netmap.Route{ID: r.ID, Network: net, Peers: r.Peers, Metric: int32(r.Metric),
			Masquerade: r.Masquerade, Description: r.Description, Enabled: r.Enabled, Groups: r.Groups})
	}
	for _, n := range sorted(a.ns, func(n *store.NameserverGroup) (time.Time, string) { return n.Created, n.ID }) {
		in.NameserverGroups = append(in.NameserverGroups, netmap.NameserverGroup{ID: n.ID, Name: n.Name,
			Nameservers: n.Nameservers, MatchDomains: n.MatchDomains, Enabled: n.Enabled, Groups: n.Groups})
	}
	for _, r := range sorted(a.records, func(r *store.DNSRecord) (time.Time, string) { return r.Created, r.ID }) {
		in.Records = append(in.Records, netmap.Record{Name: r.Name, Type: r.Type, Value: cnameTarget(r, a.a.DNSDomain), TTL: r.TTL})
	}
	return in
}

// stamp returns the creation time of a new entity: now, but always after
// the previous one, so that lists ordered by creation (and the rules in
// maps) keep the order things were made in, even within one clock tick.
// Callers hold mu.
func (a *account) stamp() time.Time {
	t := a.s.now()
	if !t.After(a.lastNew) {
		t = a.lastNew.Add(time.Nanosecond)
	}
	a.lastNew = t
	return t
}

func newest(d *store.AccountData) time.Time {
	t := d.Account.Created
	later := func(c time.Time) {
		if c.After(t) {
			t = c
		}
	}
	for _, x := range d.Groups {
		later(x.Created)
	}
	for _, x := range d.SetupKeys {
		later(x.Created)
	}
	for _, x := range d.Peers {
		later(x.Created)
	}
	for _, x := range d.Policies {
		later(x.Created)
	}
	for _, x := range d.Routes {
		later(x.Created)
	}
	for _, x := range d.NameserverGroups {
		later(x.Created)
	}
	for _, x := range d.DNSRecords {
		later(x.Created)
	}
	return t
}

// loginExpires returns when p's login expires, zero when it does not.
func (a *account) loginExpires(p *store.Peer, now time.Time) time.Time {
	if a.a.LoginExpiration <= 0 || !p.LoginExpirationEnabled {
		return time.Time{}
	}
	return p.LastLogin.Add(a.a.LoginExpiration)
}

func (a *account) loginExpired(p *store.Peer, now time.Time) bool {
	exp := a.loginExpires(p, now)
	return !exp.IsZero() && !now.Before(exp)
}

// loginExpiredCount is how many peers' logins are expired now. Callers hold
// mu.
func (a *account) loginExpiredCount(now time.Time) int {
	n := 0
	for _, p := range a.peers {
		if a.loginExpired(p, now) {
			n++
		}
	}
	return n
}

// sorted returns the values of m ordered by the key function (time, id).
func sorted[T any](m map[string]*T, key func(*T) (time.Time, string)) []*T {
	out := make([]*T, 0, len(m))
	for _, v := range m {
		out = append(out, v)
	}
	slices.SortFunc(out, func(x, y *T) int {
		tx, ix := key(x)
		ty, iy := key(y)
		return cmp.Or(tx.Compare(ty), cmp.Compare(ix, iy))
	})
	return out
}

// allocIP returns a free address of the overlay network, searching from
// after the last one handed out so that freed addresses are reused last.
// Callers hold mu.
func (a *account) allocIP() (netip.Addr, bool) {
	first := a.network.Addr().Next() // skip the network address
	ip := a.nextIP
	if !a.network.Contains(ip) {
		ip = first
	}
	size := uint64(1) << min(32-a.network.Bits(), 32)
	for range size {
		next := ip.Next()
		if !a.network.Contains(next) {
			next = first // ip is the broadcast address: wrap
		} else if _, used := a.byIP[ip]; !used && ip != a.network.Addr() {
			a.nextIP = next
			return ip, true
		}
		ip = next
	}
	return netip.Addr{}, false
}

// scatterIP moves where allocIP's search starts to a random address of the
// overlay network. Callers hold mu.
func (a *account) scatterIP() {
	bits := 32 - a.network.Bits()
	if !a.network.Addr().Is4() || bits < 2 {
		return
	}
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		return // the sequential search still works, only slower
	}
	base := a.network.Addr().As4()
	off := binary.BigEndian.Uint32(b[:]) & (uint32(1)<<min(bits, 31) - 1)
	binary.BigEndian.PutUint32(b[:], binary.BigEndian.Uint32(base[:])|off)
	a.nextIP = netip.AddrFrom4(b)
}

// label returns a unique DNS label made from a hostname: "laptop",
// "laptop-2", ... Callers hold mu; self is the peer being (re)labelled.
func (a *account) label(hostname string, self string) string {
	base := dnsLabel(hostname)
	for n := 1; ; n++ {
		l := base
		if n > 1 {
			suffix := fmt.Sprintf("-%d", n)
			l = strings.TrimRight(base[:min(len(base), 63-len(suffix))], "-") + suffix
		}
		if p, taken := a.byLabel[l]; (!taken || p.ID == self) && a.recordAt(l) == nil {
			return l
		}
	}
}

// dnsLabel makes an RFC 1123 label from a hostname: lower case, letters,
// digits and inner hyphens, at most 63 characters; "peer" if nothing is left.
func dnsLabel(hostname string) string {
	host, _, _ := strings.Cut(strings.ToLower(strings.TrimSpace(hostname)), ".")
	var b strings.Builder
	for _, r := range host {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			b.WriteRune(r)
		default:
			b.WriteByte('-')
		}
	}
	l := strings.Trim(b.String(), "-")
	for strings.Contains(l, "--") {
		l = strings.ReplaceAll(l, "--", "-")
	}
	if len(l) > 63 {
		l = strings.TrimRight(l[:63], "-")
	}
	if l == "" {
		return "peer"
	}
	return l
}

var idEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// newID returns a random id of 16 lowercase characters.
func newID() string {
	var b [10]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("control: crypto/rand: " + err.Error())
	}
	return idEncoding.EncodeToString(b[:])
}
