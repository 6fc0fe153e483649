package control

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/base32"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

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
	online   map[string]int // peer id → open Sync streams
	// expired holds the peers whose login expiry is recorded in the audit
	// log (with when it expired), so that each expiry is recorded once.
	expired map[string]time.Time
	nextIP  netip.Addr    // where the search for a free address starts
	lastNew time.Time     // creation time of the newest entity (see stamp)
	pending netmap.Change // not yet pushed
	dirty   bool

	dist distributor
}

func newAccount(s *Service, d *store.AccountData) (*account, error) {
	a := &account{
		s:        s,
		id:       d.Account.ID,
		log:      s.log.With(zap.String("account", d.Account.ID)),
		a:        d.Account,
		peers:    map[string]*store.Peer{},
		byKey:    map[string]*store.Peer{},
		byLabel:  map[string]*store.Peer{},
		byIP:     map[netip.Addr]*store.Peer{},
		groups:   map[string]*store.Group{},
		keys:     map[string]*store.SetupKey{},
		keyHash:  map[string]*store.SetupKey{},
		policies: map[string]*store.Policy{},
		routes:   map[string]*store.Route{},
		ns:       map[string]*store.NameserverGroup{},
		records:  map[string]*store.DNSRecord{},
		online:   map[string]int{},
		expired:  map[string]time.Time{},
	}
	net, err := netip.ParsePrefix(d.Account.OverlayNetwork)
	if err != nil {
		return nil, fmt.Errorf("account %s: overlay network %q: %w", d.Account.ID, d.Account.OverlayNetwork, err)
	}
	a.network = net.Masked()
	for i := range d.Groups {
		g := &d.Groups[i]
		a.groups[g.ID] = g
		if g.IsAll {
			a.all = g
		}
	}
	if a.all == nil {
		return nil, fmt.Errorf("account %s has no All group", d.Account.ID)
	}
	for i := range d.SetupKeys {
		a.putKey(&d.SetupKeys[i])
	}
	for i := range d.Peers {
		p := &d.Peers[i]
		if _, err := netip.ParseAddr(p.OverlayIP); err != nil {
			return nil, fmt.Errorf("account %s: peer %s: overlay ip %q: %w", d.Account.ID, p.Name, p.OverlayIP, err)
		}
		a.putPeer(p)
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
	// Expiries before this start were recorded by the start that saw them.
	for _, p := range a.peers {
		if a.loginExpired(p, s.now()) {
			a.expired[p.ID] = a.loginExpires(p, s.now())
		}
	}
	a.nextIP = a.network.Addr().Next()
	a.lastNew = newest(d)
	a.dist.init(a, d.Account.Serial)
	return a, nil
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
func (a *account) commit(ctx context.Context, ev audit, write func(*store.Tx) error, apply func(), c netmap.Change) error {
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
		return fmt.Errorf("%s: %w", ev.action, err)
	}
	if apply != nil {
		apply()
	}
	if !c.Empty() {
		a.change(c)
	}
	return nil
}

// input snapshots what maps depend on. Callers hold mu. Lists are sorted by
// creation so that maps come out in a stable order.
func (a *account) input() *netmap.Input {
	in := &netmap.Input{Settings: netmap.Settings{Domain: a.a.DNSDomain, Network: a.network, MTU: a.s.opts.MTU,
		PostQuantum: pqMapMode(a.a.PostQuantum)}}
	now := a.s.now()
	in.Peers = make([]netmap.Peer, 0, len(a.peers))
	for _, p := range a.peers {
		in.Peers = append(in.Peers, netmap.Peer{ID: p.ID, Key: p.PublicKey, Name: p.Name, Label: p.DNSLabel,
			IP: netip.MustParseAddr(p.OverlayIP), Groups: p.Groups, Online: a.online[p.ID] > 0, LastSeen: p.LastSeen,
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
