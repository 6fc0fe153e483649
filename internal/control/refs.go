package control

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"meshd/store"
)

// find resolves a reference to an entity by id, then by exact name, then by
// name ignoring case. names returns the names an entity answers to.
func find[T any](m map[string]*T, ref, kind, noun string, names func(*T) []string) (*T, error) {
	ref = strings.TrimSpace(ref)
	if ref == "" {
		return nil, invalidf("no %s given", kind)
	}
	if v, ok := m[ref]; ok {
		return v, nil
	}
	for _, fold := range []bool{false, true} {
		var hits []*T
		for _, v := range m {
			for _, n := range names(v) {
				if n == ref || (fold && strings.EqualFold(n, ref)) {
					hits = append(hits, v)
					break
				}
			}
		}
		if len(hits) == 1 {
			return hits[0], nil
		}
		if len(hits) > 1 {
			return nil, conflictf("%s %q is ambiguous (%d match): use its id, see `meshd admin %s list`", kind, ref, len(hits), noun)
		}
	}
	return nil, notFoundf("no %s %q: see `meshd admin %s list`", kind, ref, noun)
}

func (a *account) peerRef(ref string) (*store.Peer, error) {
	return find(a.peers, ref, "peer", "peers", func(p *store.Peer) []string {
		return []string{p.Name, p.DNSLabel, p.OverlayIP, p.PublicKey}
	})
}

func (a *account) groupRef(ref string) (*store.Group, error) {
	return find(a.groups, ref, "group", "groups", func(g *store.Group) []string { return []string{g.Name} })
}

// groupIDs resolves group references to ids, without repeats; with
// memberships set, All is dropped (every peer is in it anyway).
func (a *account) groupIDs(refs []string, memberships bool) ([]string, error) {
	var out []string
	for _, r := range refs {
		g, err := a.groupRef(r)
		if err != nil {
			return nil, err
		}
		if (memberships && g.IsAll) || slices.Contains(out, g.ID) {
			continue
		}
		out = append(out, g.ID)
	}
	return out, nil
}

// peerIDs resolves peer references to ids, without repeats.
func (a *account) peerIDs(refs []string) ([]string, error) {
	var out []string
	for _, r := range refs {
		p, err := a.peerRef(r)
		if err != nil {
			return nil, err
		}
		if !slices.Contains(out, p.ID) {
			out = append(out, p.ID)
		}
	}
	return out, nil
}

func (a *account) groupNames(ids []string) []string {
	out := make([]string, 0, len(ids))
	for _, id := range ids {
		if g := a.groups[id]; g != nil {
			out = append(out, g.Name)
		}
	}
	return out
}

func (a *account) peerNames(ids []string) []string {
	out := make([]string, 0, len(ids))
	for _, id := range ids {
		if p := a.peers[id]; p != nil {
			out = append(out, p.Name)
		}
	}
	return out
}

// checkDomain validates a DNS name (a domain, a match domain, a record name).
func checkDomain(what, d string) (string, error) {
	d = strings.TrimSuffix(strings.ToLower(strings.TrimSpace(d)), ".")
	if d == "" || len(d) > 253 {
		return "", invalidf("%s %q: not a DNS name", what, d)
	}
	for _, l := range strings.Split(d, ".") {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return "", invalidf("%s %q: not a DNS name", what, d)
		}
		for _, r := range l {
			if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '*') {
				return "", invalidf("%s %q: not a DNS name", what, d)
			}
		}
	}
	return d, nil
}

// checkCIDR parses a network in CIDR form.
func checkCIDR(what, s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(strings.TrimSpace(s))
	if err != nil {
		return netip.Prefix{}, invalidf("%s %q: not a CIDR like 192.168.1.0/24", what, s)
	}
	return p.Masked(), nil
}

func ts(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

func plural(n int, word string) string {
	if n == 1 {
		return fmt.Sprintf("1 %s", word)
	}
	return fmt.Sprintf("%d %ss", n, word)
}
