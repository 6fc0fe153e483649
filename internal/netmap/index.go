package netmap

import (
	"cmp"
	"slices"
	"sync"

	"google.golang.org/protobuf/types/known/timestamppb"

	controlv1 "meshd/api/control/v1"
)

// Index is an immutable, precomputed view of an Input from which the map of
// any peer is assembled. It is safe for concurrent use. Maps share their
// RemotePeer, FirewallRule and DNS messages with the Index and with each
// other: callers must not modify what Map returns except the top-level
// NetworkMap fields (serial, relays, signal) that Map leaves unset.
type Index struct {
	settings Settings
	mtu      uint32
	peers    []peerEntry // sorted by overlay IP
	byID     map[string]int32

	groupIdx map[string]int32
	groups   []Group
	members  [][]int32 // group → peers, ascending

	policies      []policyEntry
	groupPolicies [][]int32 // group → policies naming it, ascending

	networks []networkEntry // routes grouped by network
	routers  bitset         // peers that route a network of networks
	ns       []nsEntry
	records  []*controlv1.DNSRecord

	scratch sync.Pool // *scratch
}

type peerEntry struct {
	p      *Peer
	remote *controlv1.RemotePeer
	groups []int32 // ascending, with All
}

type policyEntry struct {
	id                   string
	bidirectional        bool
	srcGroups, dstGroups bitset
	src, dst             []int32 // peers, ascending
	// Shared rule objects, aligned with src and dst: the rule a peer on
	// the other side holds about each of them.
	srcIn, srcOut []*controlv1.FirewallRule
	dstIn, dstOut []*controlv1.FirewallRule
	// For a bidirectional policy, a peer on both sides is connected with
	// either side once: both = src ∪ dst, with its rules.
	both            []int32
	bothIn, bothOut []*controlv1.FirewallRule
}

type networkEntry struct {
	routes []routeEntry // by metric, then id
}

type routeEntry struct {
	r      *Route
	peers  []int32 // routing peers, in order of preference
	groups bitset  // nil: every peer receives it
}

type nsEntry struct {
	msg    *controlv1.NameserverGroup
	groups bitset // nil: every peer
}

// scratch is per-computation working memory, reused through a pool.
type scratch struct {
	peers    bitset
	policies bitset
	pols     []int32
	sides    []struct{ src, dst, both bool }
}

// Build precomputes the Index of in. It keeps pointers into in, which the
// caller must not modify afterwards. Cost: linear in the number of peers,
// group memberships and policy members.
func Build(in *Input) *Index {
	ix := &Index{
		settings: in.Settings,
		mtu:      in.Settings.MTU,
		byID:     make(map[string]int32, len(in.Peers)),
		groupIdx: make(map[string]int32, len(in.Groups)),
		groups:   in.Groups,
	}
	if ix.mtu == 0 {
		ix.mtu = DefaultMTU
	}
	allGroups := []int32{}
	for i, g := range in.Groups {
		ix.groupIdx[g.ID] = int32(i)
		if g.All {
			allGroups = append(allGroups, int32(i))
		}
	}
	ix.members = make([][]int32, len(in.Groups))

	// Peers in overlay-IP order, so that every list built from ascending
	// peer indices comes out sorted by IP.
	order := make([]int32, len(in.Peers))
	for i := range order {
		order[i] = int32(i)
	}
	slices.SortFunc(order, func(a, b int32) int {
		return cmp.Or(in.Peers[a].IP.Compare(in.Peers[b].IP), cmp.Compare(in.Peers[a].ID, in.Peers[b].ID))
	})
	ix.peers = make([]peerEntry, len(in.Peers))
	for pos, i := range order {
		p := &in.Peers[i]
		e := peerEntry{p: p, remote: remotePeer(p, in.Settings.Domain)}
		e.groups = make([]int32, 0, len(p.Groups)+len(allGroups))
		e.groups = append(e.groups, allGroups...)
		for _, g := range p.Groups {
			if gi, ok := ix.groupIdx[g]; ok && !in.Groups[gi].All {
				e.groups = append(e.groups, gi)
			}
		}
		slices.Sort(e.groups)
		e.groups = slices.Compact(e.groups)
		for _, gi := range e.groups {
			ix.members[gi] = append(ix.members[gi], int32(pos))
		}
		ix.peers[pos] = e
		ix.byID[p.ID] = int32(pos)
	}

	ix.buildPolicies(in)
	ix.buildRoutes(in)
	ix.buildDNS(in)
	n, np := len(ix.peers), len(ix.policies)
	ix.scratch.New = func() any { return &scratch{peers: newBitset(n), policies: newBitset(np)} }
	return ix
}

func remotePeer(p *Peer, domain string) *controlv1.RemotePeer {
	r := &controlv1.RemotePeer{
		PublicKey:   p.Key,
		Name:        p.Name,
		DnsName:     fqdn(p.Label, domain),
		OverlayIp:   p.IP.String(),
		AllowedIps:  []string{p.IP.String() + "/32"},
		Online:      p.Online,
		PostQuantum: p.PostQuantum,
	}
	if !p.LastSeen.IsZero() {
		r.LastSeen = timestamppb.New(p.LastSeen)
	}
	return r
}

func fqdn(label, domain string) string {
	if domain == "" {
		return label
	}
	return label + "." + domain
}

// groupBits returns the set of the given group ids (unknown ids ignored).
func (ix *Index) groupBits(ids []string) bitset {
	b := newBitset(len(ix.groups))
	for _, id := range ids {
		if gi, ok := ix.groupIdx[id]; ok {
			b.set(gi)
		}
	}
	return b
}

// union returns the members of the groups in b, ascending, without repeats.
func (ix *Index) union(b bitset, tmp bitset) []int32 {
	var out []int32
	for gi := range ix.members {
		if b.has(int32(gi)) {
			for _, p := range ix.members[gi] {
				tmp.set(p)
			}
		}
	}
	tmp.drain(func(p int32) { out = append(out, p) })
	return out
}

func (ix *Index) buildPolicies(in *Input) {
	tmp := newBitset(len(ix.peers))
	ix.groupPolicies = make([][]int32, len(in.Groups))
	for i := range in.Policies {
		p := &in.Policies[i]
		if !p.Enabled {
			continue
		}
		e := policyEntry{id: p.ID, bidirectional: p.Bidirectional,
			srcGroups: ix.groupBits(p.Sources), dstGroups: ix.groupBits(p.Destinations)}
		e.src = ix.union(e.srcGroups, tmp)
		e.dst = ix.union(e.dstGroups, tmp)
		if len(e.src) == 0 || len(e.dst) == 0 {
			continue // connects nobody
		}
		rules := func(peers []int32, dir controlv1.Direction) []*controlv1.FirewallRule {
			out := make([]*controlv1.FirewallRule, len(peers))
			for j, q := range peers {
				out[j] = &controlv1.FirewallRule{PeerIp: ix.peers[q].remote.OverlayIp, Direction: dir,
					Protocol: p.Protocol, Ports: p.Ports, PolicyId: p.ID}
			}
			return out
		}
		e.srcIn = rules(e.src, controlv1.Direction_DIRECTION_IN)
		e.dstOut = rules(e.dst, controlv1.Direction_DIRECTION_OUT)
		if p.Bidirectional {
			e.srcOut = rules(e.src, controlv1.Direction_DIRECTION_OUT)
			e.dstIn = rules(e.dst, controlv1.Direction_DIRECTION_IN)
			for _, q := range e.src {
				tmp.set(q)
			}
			for _, q := range e.dst {
				tmp.set(q)
			}
			tmp.drain(func(q int32) { e.both = append(e.both, q) })
			switch {
			case slices.Equal(e.both, e.src):
				e.both, e.bothIn, e.bothOut = e.src, e.srcIn, e.srcOut
			case slices.Equal(e.both, e.dst):
				e.both, e.bothIn, e.bothOut = e.dst, e.dstIn, e.dstOut
			default:
				e.bothIn = rules(e.both, controlv1.Direction_DIRECTION_IN)
				e.bothOut = rules(e.both, controlv1.Direction_DIRECTION_OUT)
			}
		}
		pi := int32(len(ix.policies))
		ix.policies = append(ix.policies, e)
		for gi := range ix.groups {
			if e.srcGroups.has(int32(gi)) || e.dstGroups.has(int32(gi)) {
				ix.groupPolicies[gi] = append(ix.groupPolicies[gi], pi)
			}
		}
	}
}

func (ix *Index) buildRoutes(in *Input) {
	ix.routers = newBitset(len(ix.peers))
	byNet := map[string]int{}
	for i := range in.Routes {
		r := &in.Routes[i]
		if !r.Enabled || !r.Network.IsValid() {
			continue
		}
		e := routeEntry{r: r}
		for _, id := range r.Peers {
			if q, ok := ix.byID[id]; ok {
				e.peers = append(e.peers, q)
			}
		}
		if len(e.peers) == 0 {
			continue
		}
		for _, q := range e.peers {
			ix.routers.set(q)
		}
		if len(r.Groups) > 0 {
			e.groups = ix.groupBits(r.Groups)
		}
		key := r.Network.Masked().String()
		n, ok := byNet[key]
		if !ok {
			n = len(ix.networks)
			byNet[key] = n
			ix.networks = append(ix.networks, networkEntry{})
		}
		ix.networks[n].routes = append(ix.networks[n].routes, e)
	}
	for _, n := range ix.networks {
		slices.SortStableFunc(n.routes, func(a, b routeEntry) int {
			return cmp.Or(cmp.Compare(a.r.Metric, b.r.Metric), cmp.Compare(a.r.ID, b.r.ID))
		})
	}
}

func (ix *Index) buildDNS(in *Input) {
	for i := range in.NameserverGroups {
		n := &in.NameserverGroups[i]
		if !n.Enabled {
			continue
		}
		e := nsEntry{msg: &controlv1.NameserverGroup{Name: n.Name, Nameservers: n.Nameservers, MatchDomains: n.MatchDomains}}
		if len(n.Groups) > 0 {
			e.groups = ix.groupBits(n.Groups)
		}
		ix.ns = append(ix.ns, e)
	}
	for _, r := range in.Records {
		ix.records = append(ix.records, &controlv1.DNSRecord{Name: r.Name, Type: r.Type, Value: r.Value, Ttl: r.TTL})
	}
}

// Len returns the number of peers.
func (ix *Index) Len() int { return len(ix.peers) }

// Has reports whether the index knows peer id.
func (ix *Index) Has(id string) bool { _, ok := ix.byID[id]; return ok }

// Members returns the ids of the peers in group id (all peers for an All
// group), sorted by overlay IP.
func (ix *Index) Members(groupID string) []string {
	gi, ok := ix.groupIdx[groupID]
	if !ok {
		return nil
	}
	out := make([]string, len(ix.members[gi]))
	for j, q := range ix.members[gi] {
		out[j] = ix.peers[q].p.ID
	}
	return out
}

// Neighbors returns the ids of the peers whose maps list peer id (the same
// peers that id's own map lists), sorted by overlay IP.
func (ix *Index) Neighbors(id string) []string {
	i, ok := ix.byID[id]
	if !ok {
		return nil
	}
	sc := ix.scratch.Get().(*scratch)
	defer ix.scratch.Put(sc)
	ix.reach(i, sc, nil)
	var out []string
	sc.peers.drain(func(q int32) { out = append(out, ix.peers[q].p.ID) })
	return out
}
