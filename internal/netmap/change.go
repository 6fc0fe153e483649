package netmap

import "slices"

// Change describes what an edit of the account touched, so that only the
// maps it can affect are recomputed.
type Change struct {
	// All: every map may change (account settings, DNS records).
	All bool
	// Peers whose own entry changed (joined, left, renamed, went online,
	// changed groups): they and every peer connected with them, before or
	// after the change, are affected.
	Peers []string
	// Groups whose members are affected, before or after the change (a
	// policy, route or nameserver group naming them changed).
	Groups []string
	// Only these peers themselves (for example a routing peer whose routes
	// changed).
	Only []string
	// Entries: peers of which at most the fields that only their own entry
	// in other maps shows changed (online, last seen, name, DNS label). Their
	// neighbours can then be sent just those entries (see Impacts). Impacts
	// checks the claim against the indexes and treats a peer whose key,
	// address or groups changed, or that routes a network, as in Peers.
	Entries []string
}

// Merge adds o to c.
func (c *Change) Merge(o Change) {
	c.All = c.All || o.All
	c.Peers = append(c.Peers, o.Peers...)
	c.Groups = append(c.Groups, o.Groups...)
	c.Only = append(c.Only, o.Only...)
	c.Entries = append(c.Entries, o.Entries...)
}

// Empty reports whether c touches nothing.
func (c *Change) Empty() bool {
	return !c.All && len(c.Peers) == 0 && len(c.Groups) == 0 && len(c.Only) == 0 && len(c.Entries) == 0
}

// Affected returns the ids of the peers whose maps c may change, looking at
// the index before (old, may be nil) and after (cur) the change; all is true
// when every peer is affected. Cost: the size of the touched peers' maps and
// of the touched groups, never all pairs of peers. Entries count as Peers
// here; Impacts tells them apart.
func Affected(old, cur *Index, c Change) (ids map[string]struct{}, all bool) {
	if c.All || old == nil {
		return nil, true
	}
	c.Peers = append(slices.Clip(c.Peers), c.Entries...)
	ids = map[string]struct{}{}
	for _, p := range c.Only {
		ids[p] = struct{}{}
	}
	for _, ix := range []*Index{old, cur} {
		for _, p := range c.Peers {
			ids[p] = struct{}{}
			for _, q := range ix.Neighbors(p) {
				ids[q] = struct{}{}
			}
		}
		for _, g := range c.Groups {
			for _, q := range ix.Members(g) {
				ids[q] = struct{}{}
			}
		}
	}
	return ids, false
}

// Impact is what a round of changes means for each peer's map.
type Impact struct {
	// All: every peer needs its whole map again.
	All bool
	// Full are the peers that need their whole map again.
	Full map[string]struct{}
	// Entries maps each other affected peer to the peers whose entries
	// are all that changed in its map: the rest of its map (self, the set
	// of peers listed, their order, rules, routes, DNS) is as before.
	Entries map[string][]string
}

// Impacts is Affected with the peers that only need new entries told apart
// (see Change.Entries). A peer x of c.Entries qualifies when both indexes
// know it with the same key, address and groups, it routes no network in
// either, and its neighbours are the same in both; otherwise it counts as
// in c.Peers. x itself always needs its whole map (its name is in its self
// config). A neighbour that another part of c affects gets its whole map.
// Cost: that of Affected plus the neighbours of the entries, never all
// pairs of peers.
func Impacts(old, cur *Index, c Change) Impact {
	if c.All || old == nil {
		return Impact{All: true}
	}
	// A round gathers a peer's every online flip: look at each peer once.
	// Clip once so that appending does not write into the caller's arrays.
	var entries []string
	c.Peers = slices.Clip(c.Peers)
	for _, x := range slices.Compact(slices.Sorted(slices.Values(c.Entries))) {
		if entryOnly(old, cur, x) {
			entries = append(entries, x)
		} else {
			c.Peers = append(c.Peers, x)
		}
	}
	c.Entries = nil
	c.Only = append(slices.Clip(c.Only), entries...)
	full, all := Affected(old, cur, c)
	if all {
		return Impact{All: true}
	}
	im := Impact{Full: full}
	for _, x := range entries {
		before, after := old.Neighbors(x), cur.Neighbors(x)
		if !slices.Equal(before, after) {
			// Not an entry-only change after all (a policy moved in
			// the same round): whoever saw x come or go needs a map.
			for _, q := range before {
				im.Full[q] = struct{}{}
			}
			for _, q := range after {
				im.Full[q] = struct{}{}
			}
			continue
		}
		for _, q := range after {
			if _, ok := im.Full[q]; ok {
				continue
			}
			if im.Entries == nil {
				im.Entries = map[string][]string{}
			}
			im.Entries[q] = append(im.Entries[q], x)
		}
	}
	return im
}

// entryOnly reports whether x's entry is the only part of other peers' maps
// that a change of x can have touched between old and cur.
func entryOnly(old, cur *Index, x string) bool {
	i, ok1 := old.byID[x]
	j, ok2 := cur.byID[x]
	if !ok1 || !ok2 {
		return false
	}
	a, b := &old.peers[i], &cur.peers[j]
	if a.p.Key != b.p.Key || a.p.IP != b.p.IP || old.routers.has(i) || cur.routers.has(j) || len(a.groups) != len(b.groups) {
		return false
	}
	for k := range a.groups {
		if old.groups[a.groups[k]].ID != cur.groups[b.groups[k]].ID {
			return false
		}
	}
	return true
}
