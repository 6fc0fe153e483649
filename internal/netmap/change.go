package netmap

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
}

// Merge adds o to c.
func (c *Change) Merge(o Change) {
	c.All = c.All || o.All
	c.Peers = append(c.Peers, o.Peers...)
	c.Groups = append(c.Groups, o.Groups...)
	c.Only = append(c.Only, o.Only...)
}

// Empty reports whether c touches nothing.
func (c *Change) Empty() bool {
	return !c.All && len(c.Peers) == 0 && len(c.Groups) == 0 && len(c.Only) == 0
}

// Affected returns the ids of the peers whose maps c may change, looking at
// the index before (old, may be nil) and after (cur) the change; all is true
// when every peer is affected. Cost: the size of the touched peers' maps and
// of the touched groups, never all pairs of peers.
func Affected(old, cur *Index, c Change) (ids map[string]struct{}, all bool) {
	if c.All || old == nil {
		return nil, true
	}
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
