package netmap

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"sync/atomic"
	"testing"

	controlv1 "meshd/api/control/v1"
)

// BenchWorld returns an account of n peers, groups groups and policies
// policies, shaped like NetBird's UpdateAccountPeers benchmark: every peer
// in All plus one to three random groups; each policy from one or two
// groups to one or two groups, a third of them bidirectional; no All→All
// rule. Deterministic for a given n.
func benchWorld(n, groups, policies int) *Input {
	r := rand.New(rand.NewPCG(uint64(n), 7))
	in := &Input{Settings: Settings{Domain: "mesh.test", Network: netip.MustParsePrefix("100.64.0.0/10")}}
	in.Groups = append(in.Groups, Group{ID: "all", Name: "All", All: true})
	for g := range groups {
		in.Groups = append(in.Groups, Group{ID: fmt.Sprintf("g%d", g), Name: fmt.Sprintf("group-%d", g)})
	}
	for i := range n {
		p := Peer{ID: fmt.Sprintf("p%d", i), Key: fmt.Sprintf("key%040d", i), Name: fmt.Sprintf("peer-%d", i),
			Label: fmt.Sprintf("peer-%d", i), Online: i%2 == 0,
			IP: netip.AddrFrom4([4]byte{100, 64 + byte(i>>16), byte(i >> 8), byte(i)})}
		for range 1 + r.IntN(3) {
			p.Groups = append(p.Groups, fmt.Sprintf("g%d", r.IntN(groups)))
		}
		in.Peers = append(in.Peers, p)
	}
	pick := func() []string {
		out := []string{fmt.Sprintf("g%d", r.IntN(groups))}
		if r.IntN(2) == 0 {
			out = append(out, fmt.Sprintf("g%d", r.IntN(groups)))
		}
		return out
	}
	for k := range policies {
		p := Policy{ID: fmt.Sprintf("pol%d", k), Enabled: true, Sources: pick(), Destinations: pick(),
			Protocol: controlv1.Protocol_PROTOCOL_ALL, Bidirectional: k%3 == 0}
		if k%2 == 1 {
			p.Protocol = controlv1.Protocol_PROTOCOL_TCP
			p.Ports, _ = ParsePorts(p.Protocol, []string{"443", "8000-8100"})
		}
		in.Policies = append(in.Policies, p)
	}
	for k := range 10 {
		in.Routes = append(in.Routes, Route{ID: fmt.Sprintf("r%d", k), Enabled: true,
			Network: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(k), 0, 0}), 16),
			Peers:   []string{fmt.Sprintf("p%d", r.IntN(n)), fmt.Sprintf("p%d", r.IntN(n))}})
	}
	in.NameserverGroups = []NameserverGroup{{Name: "default", Nameservers: []string{"1.1.1.1"}, Enabled: true}}
	return in
}

var sizes = []int{1000, 5000, 10000}

// BenchmarkFullComputation: the maps of all peers, from scratch (Build of
// the index plus every map), 200 groups, 100 policies. Compare NetBird's
// 0.8–1.7 s for 5,000 peers.
func BenchmarkFullComputation(b *testing.B) {
	for _, n := range sizes {
		in := benchWorld(n, 200, 100)
		b.Run(fmt.Sprintf("peers=%d", n), func(b *testing.B) {
			var entries atomic.Int64
			for b.Loop() {
				entries.Store(0)
				ix := Build(in)
				ix.ForEach(0, func(_ string, m *controlv1.NetworkMap) {
					entries.Add(int64(len(m.Peers) + len(m.FirewallRules)))
				})
			}
			b.ReportMetric(float64(entries.Load())/float64(n), "entries/map")
		})
	}
}

// BenchmarkBuild: the index alone (group → peers, policy reachability),
// which a change rebuilds before recomputing only the affected maps.
func BenchmarkBuild(b *testing.B) {
	for _, n := range sizes {
		in := benchWorld(n, 200, 100)
		b.Run(fmt.Sprintf("peers=%d", n), func(b *testing.B) {
			for b.Loop() {
				Build(in)
			}
		})
	}
}

// BenchmarkPeerJoin: what one change costs at control: rebuild the index,
// find the affected peers, recompute only their maps.
func BenchmarkPeerJoin(b *testing.B) {
	for _, n := range sizes {
		in := benchWorld(n+1, 200, 100)
		before := *in
		before.Peers = in.Peers[:n]
		old := Build(&before)
		joined := in.Peers[n].ID
		b.Run(fmt.Sprintf("peers=%d", n), func(b *testing.B) {
			affected := 0
			for b.Loop() {
				cur := Build(in)
				ids, _ := Affected(old, cur, Change{Peers: []string{joined}})
				for id := range ids {
					cur.Map(id)
				}
				affected = len(ids)
			}
			b.ReportMetric(float64(affected), "affected")
		})
	}
}

// BenchmarkAllToAll: the default policy at its worst, every map lists every
// peer (output is quadratic by nature; this is the cost per peer map).
func BenchmarkAllToAll(b *testing.B) {
	for _, n := range []int{1000, 5000} {
		in := benchWorld(n, 200, 0)
		in.Policies = []Policy{{ID: "default", Enabled: true, Sources: []string{"all"}, Destinations: []string{"all"},
			Protocol: controlv1.Protocol_PROTOCOL_ALL, Bidirectional: true}}
		b.Run(fmt.Sprintf("peers=%d", n), func(b *testing.B) {
			for b.Loop() {
				ix := Build(in)
				ix.ForEach(0, func(string, *controlv1.NetworkMap) {})
			}
		})
	}
}
