package netmap

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"

	"google.golang.org/protobuf/proto"

	controlv1 "meshd/api/control/v1"
)

// withEntries applies the entries of xs as cur lists them in q's map to
// m (a map of q from an older index), as an agent applies an update.
func withEntries(t *testing.T, cur *Index, q string, m *controlv1.NetworkMap, xs []string) *controlv1.NetworkMap {
	t.Helper()
	out := proto.Clone(m).(*controlv1.NetworkMap)
	for _, x := range xs {
		rp, listed, ok := cur.Entry(q, x)
		if !ok {
			t.Fatalf("Entry(%s, %s) not ok", q, x)
		}
		i := slices.IndexFunc(out.Peers, func(p *controlv1.RemotePeer) bool { return p.PublicKey == rp.PublicKey })
		switch {
		case listed && i < 0:
			t.Fatalf("entry %s is new in %s's map: not an entry-only change", x, q)
		case listed:
			out.Peers[i] = rp
		case i >= 0:
			out.Peers = slices.Delete(out.Peers, i, i+1)
		}
	}
	return out
}

func TestImpactsEntryOnly(t *testing.T) {
	pol := Policy{ID: "p", Enabled: true, Sources: []string{"eng"}, Destinations: []string{"servers"}}
	groups := map[string][]string{"eng": {"a", "b"}, "servers": {"c"}, "other": {"d"}}
	before := world(groups, pol)
	after := world(groups, pol)
	after.Peers[1].Online = false // b
	after.Peers[1].Name = "b-renamed"
	old, cur := Build(before), Build(after)
	im := Impacts(old, cur, Change{Entries: []string{"b"}})
	if im.All || len(im.Full) != 1 || len(im.Entries) != 1 || !slices.Equal(im.Entries["c"], []string{"b"}) {
		t.Fatalf("impact = %+v, want b full and c entries [b]", im)
	}
	if _, ok := im.Full["b"]; !ok {
		t.Fatalf("impact = %+v, want b full (its self config)", im)
	}
	if got, want := withEntries(t, cur, "c", old.Map("c"), im.Entries["c"]), cur.Map("c"); !proto.Equal(got, want) {
		t.Fatalf("c's map with b's new entry:\n%v\nwant\n%v", got, want)
	}

	// The same peer moving groups is not an entry-only change.
	after.Peers[1].Groups = []string{"other"}
	im = Impacts(old, Build(after), Change{Entries: []string{"b"}})
	if len(im.Entries) != 0 || len(im.Full) != 2 {
		t.Fatalf("groups moved: impact = %+v, want b and c full", im)
	}
	// Nor a change of its address.
	after = world(groups, pol)
	after.Peers[1].IP = netip.MustParseAddr("100.64.0.99")
	if im = Impacts(old, Build(after), Change{Entries: []string{"b"}}); len(im.Entries) != 0 {
		t.Fatalf("address moved: impact = %+v", im)
	}
	// Another part of the round that affects c wins over the entry.
	after = world(groups, pol)
	after.Peers[1].Online = false
	im = Impacts(old, Build(after), Change{Entries: []string{"b"}, Groups: []string{"servers"}})
	if len(im.Entries) != 0 {
		t.Fatalf("c affected otherwise: impact = %+v", im)
	}
	if _, ok := im.Full["c"]; !ok {
		t.Fatalf("impact = %+v, want c full", im)
	}
	if im := Impacts(nil, cur, Change{Entries: []string{"b"}}); !im.All {
		t.Fatal("no old index: want all")
	}
}

// A routing peer's online state picks routes and moves allowed IPs: its
// neighbours get whole maps, and Entry refuses to give its entry.
func TestImpactsRoutingPeer(t *testing.T) {
	pol := Policy{ID: "p", Enabled: true, Sources: []string{"eng"}, Destinations: []string{"gw"}, Bidirectional: true}
	groups := map[string][]string{"eng": {"a", "b"}, "gw": {"c", "d"}}
	net := netip.MustParsePrefix("192.168.1.0/24")
	routes := []Route{{ID: "r1", Network: net, Peers: []string{"c"}, Metric: 10, Enabled: true},
		{ID: "r2", Network: net, Peers: []string{"d"}, Metric: 20, Enabled: true}}
	before, after := world(groups, pol), world(groups, pol)
	before.Routes, after.Routes = routes, routes
	after.Peers[2].Online = false // c: a and b now route through d
	old, cur := Build(before), Build(after)
	im := Impacts(old, cur, Change{Entries: []string{"c"}})
	if len(im.Entries) != 0 {
		t.Fatalf("impact = %+v, want whole maps only", im)
	}
	for _, q := range []string{"a", "b", "c"} {
		if _, ok := im.Full[q]; !ok {
			t.Fatalf("impact = %+v, want %s full", im, q)
		}
	}
	if _, _, ok := cur.Entry("a", "c"); ok {
		t.Fatal("Entry gave a routing peer's entry")
	}
}

func TestEntry(t *testing.T) {
	pol := Policy{ID: "p", Enabled: true, Sources: []string{"eng"}, Destinations: []string{"servers"}}
	ix := Build(world(map[string][]string{"eng": {"a", "b"}, "servers": {"c"}}, pol))
	for _, tc := range []struct {
		self, id   string
		listed, ok bool
		wantKey    string
	}{
		{"a", "c", true, true, "key-c"},
		{"c", "a", true, true, "key-a"}, // one-way policies connect both ways
		{"a", "b", false, true, "key-b"},
		{"a", "a", false, true, "key-a"},
		{"a", "zz", false, false, ""},
		{"zz", "a", false, false, ""},
	} {
		rp, listed, ok := ix.Entry(tc.self, tc.id)
		if listed != tc.listed || ok != tc.ok || (ok && rp.PublicKey != tc.wantKey) {
			t.Errorf("Entry(%s, %s) = %v %v %v", tc.self, tc.id, rp, listed, ok)
		}
	}
}

// Random accounts and random entry changes: every peer that Impacts leaves
// out has the same map, and every peer it gives entries gets exactly the
// new map by applying them.
func TestImpactsRandom(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	gnames := []string{"g0", "g1", "g2", "g3"}
	applied := 0
	for round := range 200 {
		groups := map[string][]string{}
		for p := range 12 {
			name := string(rune('a' + p))
			for _, g := range gnames {
				if rng.IntN(3) == 0 {
					groups[g] = append(groups[g], name)
				}
			}
			groups["g0"] = append(groups["g0"], name) // everyone exists
		}
		var pols []Policy
		for i := range 1 + rng.IntN(3) {
			pols = append(pols, Policy{ID: fmt.Sprint("p", i), Enabled: true, Bidirectional: rng.IntN(2) == 0,
				Sources: []string{gnames[rng.IntN(4)]}, Destinations: []string{gnames[rng.IntN(4)]}})
		}
		before, after := world(groups, pols...), world(groups, pols...)
		if rng.IntN(2) == 0 {
			r := Route{ID: "r", Network: netip.MustParsePrefix("10.0.0.0/8"), Enabled: true,
				Peers: []string{before.Peers[rng.IntN(len(before.Peers))].ID}}
			before.Routes, after.Routes = []Route{r}, []Route{r}
		}
		var c Change
		for range 1 + rng.IntN(3) {
			p := &after.Peers[rng.IntN(len(after.Peers))]
			p.Online = !p.Online
			if rng.IntN(3) == 0 {
				p.Name += "x"
				p.Label += "x"
			}
			c.Entries = append(c.Entries, p.ID)
		}
		if rng.IntN(4) == 0 { // and sometimes a policy changes in the same round
			after.Policies = append(slices.Clone(after.Policies), Policy{ID: "extra", Enabled: true,
				Sources: []string{"g1"}, Destinations: []string{"g2"}})
			c.Groups = append(c.Groups, "g1", "g2")
		}
		old, cur := Build(before), Build(after)
		im := Impacts(old, cur, c)
		if im.All {
			t.Fatalf("round %d: all", round)
		}
		for _, p := range after.Peers {
			if _, ok := im.Full[p.ID]; ok {
				continue
			}
			got := old.Map(p.ID)
			if xs, ok := im.Entries[p.ID]; ok {
				got = withEntries(t, cur, p.ID, got, xs)
				applied++
			}
			if want := cur.Map(p.ID); !proto.Equal(got, want) {
				t.Fatalf("round %d: map of %s (entries %v):\n%v\nwant\n%v", round, p.ID, im.Entries[p.ID], got, want)
			}
		}
	}
	if applied < 200 {
		t.Fatalf("only %d maps took entries: the test does not exercise updates", applied)
	}
	t.Logf("%d maps took entries", applied)
}
