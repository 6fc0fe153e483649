package control_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

	"connectrpc.com/connect"
	"go.uber.org/zap/zaptest"
	"google.golang.org/protobuf/proto"

	adminv1 "meshd/api/admin/v1"
	"meshd/internal/control/controltest"
	"meshd/internal/controlclient"
)

// freshMap opens a new Sync stream for agent a's peer and returns its first
// message: the whole map as control computes it now.
func freshMap(tb testing.TB, h *controltest.Harness, a *controltest.Agent) *controltest.Map {
	tb.Helper()
	c, err := controlclient.New(controlclient.Options{URL: h.URL, Private: a.Key, HTTPClient: h.HTTPClient(),
		Log: zaptest.NewLogger(tb).Named("fresh-" + a.Name), Meta: controlclient.Meta{Hostname: a.Name, OS: "linux", Version: "test"}})
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), controltest.WaitTimeout)
	defer cancel()
	var first *controltest.Map
	err = c.Sync(ctx, func(m *controltest.Map) {
		if first == nil {
			first = m
		}
		cancel()
	}, nil)
	if first == nil {
		tb.Fatalf("fresh sync of %s: no map (%v)", a.Name, err)
	}
	return first
}

// sameMap reports whether two maps are equal but for their serials.
func sameMap(a, b *controltest.Map) bool {
	a, b = proto.Clone(a).(*controltest.Map), proto.Clone(b).(*controltest.Map)
	a.Serial, b.Serial = 0, 0
	return proto.Equal(a, b)
}

// peerOnline: the map lists peer name with the given online state.
func peerOnline(name string, online bool) func(*controltest.Map) bool {
	return func(m *controltest.Map) bool {
		for _, p := range m.Peers {
			if p.Name == name {
				return p.Online == online
			}
		}
		return false
	}
}

// checkLatest checks that each agent's newest map is the whole map control
// computes now, and that its serials only grew.
func checkLatest(t *testing.T, h *controltest.Harness, as ...*controltest.Agent) {
	t.Helper()
	for _, a := range as {
		// The agent may still be receiving the last change (tests wait for
		// one agent only): wait, within the harness's patience, for the map
		// a fresh sync gives.
		want := freshMap(t, h, a)
		a.WaitFor(t, "the map a fresh sync gives:\n"+want.String(), func(m *controltest.Map) bool { return sameMap(m, want) })
		if s := a.Serials(); !slices.IsSorted(s) || len(slices.Compact(slices.Clone(s))) != len(s) {
			t.Fatalf("%s serials not strictly increasing: %v", a.Name, s)
		}
	}
}

// A peer going offline and online again reaches every neighbour as an
// update, not a whole map, and what the agents make of it is the map a full
// computation gives. An agent that does not take updates gets whole maps.
func TestOnlineOfflineSendsUpdates(t *testing.T) {
	h := controltest.NewHarness(t, 0)
	as := agents(t, h, "a", "b", "c", "x")
	old := h.AddAgent(controltest.AgentOptions{Hostname: "old", FullMapsOnly: true})
	all := append(slices.Clone(as), old)
	for _, a := range all {
		var others []string
		for _, b := range all {
			if b != a {
				others = append(others, b.Name)
			}
		}
		a.WaitFor(t, "settled", func(m *controltest.Map) bool {
			var names []string
			for _, p := range m.Peers {
				if !p.Online {
					return false
				}
				names = append(names, p.Name)
			}
			slices.Sort(names)
			slices.Sort(others)
			return slices.Equal(names, others)
		})
	}
	x, neighbours := as[3], append(slices.Clone(as[:3]), old)
	for round, online := range []bool{false, true, false} {
		before := map[*controltest.Agent]controlclient.Stats{}
		for _, a := range neighbours {
			before[a] = a.Client.Stats()
		}
		if online {
			x.StartSync()
		} else {
			x.Stop()
		}
		for _, a := range neighbours {
			a.WaitFor(t, fmt.Sprintf("x online=%v", online), peerOnline("x", online))
		}
		for _, a := range neighbours {
			st, was := a.Client.Stats(), before[a]
			if a == old {
				if st.Updates != 0 || st.Maps == was.Maps {
					t.Fatalf("round %d: agent without updates: %+v -> %+v, want whole maps only", round, was, st)
				}
				continue
			}
			if st.Maps != was.Maps || st.Updates == was.Updates || st.Resyncs != 0 {
				t.Fatalf("round %d: %s: %+v -> %+v, want updates only", round, a.Name, was, st)
			}
		}
		checkLatest(t, h, neighbours...)
	}
}

// Renaming a peer sends its neighbours its new entry; moving it to another
// group sends whole maps.
func TestRenameSendsUpdates(t *testing.T) {
	h := controltest.NewHarness(t, 0)
	ctx := context.Background()
	as := agents(t, h, "a", "b", "c")
	for _, a := range as[:2] {
		a.WaitFor(t, "settled", func(m *controltest.Map) bool { return len(m.Peers) == 2 && peerOnline("c", true)(m) })
	}
	peers := must[adminv1.ListPeersResponse](t)(h.Admin.ListPeers(ctx, connect.NewRequest(&adminv1.ListPeersRequest{})))
	var id string
	for _, p := range peers.Peers {
		if p.Name == "c" {
			id = p.Id
		}
	}
	was := as[0].Client.Stats()
	must[adminv1.Peer](t)(h.Admin.UpdatePeer(ctx, connect.NewRequest(&adminv1.UpdatePeerRequest{Id: id, Name: proto.String("db")})))
	for _, a := range as[:2] {
		a.WaitFor(t, "renamed", peerOnline("db", true))
	}
	as[2].WaitFor(t, "own new name", func(m *controltest.Map) bool { return m.Self.Name == "db" })
	if st := as[0].Client.Stats(); st.Maps != was.Maps || st.Updates == was.Updates {
		t.Fatalf("rename: %+v -> %+v, want an update", was, st)
	}
	checkLatest(t, h, as...)

	// Only the group ab reaches itself; then db joins it: a and b get
	// whole maps that list db again.
	must[adminv1.Group](t)(h.Admin.CreateGroup(ctx, connect.NewRequest(&adminv1.CreateGroupRequest{Name: "ab", Peers: []string{"a", "b"}})))
	must[adminv1.Policy](t)(h.Admin.CreatePolicy(ctx, connect.NewRequest(&adminv1.CreatePolicyRequest{Name: "ab",
		Sources: []string{"ab"}, Destinations: []string{"ab"}, Bidirectional: true})))
	must[adminv1.DeletePolicyResponse](t)(h.Admin.DeletePolicy(ctx, connect.NewRequest(&adminv1.DeletePolicyRequest{Id: "Default"})))
	as[0].WaitFor(t, "without db", settled("b"))
	was = as[0].Client.Stats()
	must[adminv1.Peer](t)(h.Admin.UpdatePeer(ctx, connect.NewRequest(&adminv1.UpdatePeerRequest{Id: id,
		Groups: &adminv1.StringList{Values: []string{"ab"}}})))
	as[0].WaitFor(t, "db back", settled("b", "db"))
	if st := as[0].Client.Stats(); st.Maps == was.Maps || st.Resyncs != 0 {
		t.Fatalf("group change: %+v -> %+v, want a whole map", was, st)
	}
	checkLatest(t, h, as...)
}

// A routing peer's online state moves routes, and a policy moves rules and
// peers: those still send whole maps, which agents taking updates apply.
func TestRouteAndPolicyChangesSendWholeMaps(t *testing.T) {
	h := controltest.NewHarness(t, 0)
	ctx := context.Background()
	as := agents(t, h, "laptop", "gw1", "gw2")
	must[adminv1.Route](t)(h.Admin.CreateRoute(ctx, connect.NewRequest(&adminv1.CreateRouteRequest{Network: "192.168.1.0/24",
		Peers: []string{"gw1", "gw2"}})))
	via := func(gw string) func(*controltest.Map) bool {
		return func(m *controltest.Map) bool {
			for _, p := range m.Peers {
				if p.Name == gw && slices.Contains(p.AllowedIps, "192.168.1.0/24") && p.Online {
					return true
				}
			}
			return false
		}
	}
	laptop := as[0]
	laptop.WaitFor(t, "route via gw1", via("gw1"))
	was := laptop.Client.Stats()
	as[1].Stop() // gw1 offline: the route moves to gw2
	laptop.WaitFor(t, "route via gw2", via("gw2"))
	if st := laptop.Client.Stats(); st.Updates != was.Updates || st.Maps == was.Maps {
		t.Fatalf("routing peer offline: %+v -> %+v, want a whole map", was, st)
	}
	checkLatest(t, h, laptop, as[2])

	was = laptop.Client.Stats()
	must[adminv1.Policy](t)(h.Admin.UpdatePolicy(ctx, connect.NewRequest(&adminv1.UpdatePolicyRequest{Id: "Default",
		Protocol: proto.String("tcp"), Ports: &adminv1.StringList{Values: []string{"22"}}})))
	laptop.WaitFor(t, "ssh only", func(m *controltest.Map) bool {
		return len(m.FirewallRules) > 0 && m.FirewallRules[0].Ports != nil
	})
	if st := laptop.Client.Stats(); st.Updates != was.Updates || st.Maps == was.Maps {
		t.Fatalf("policy change: %+v -> %+v, want a whole map", was, st)
	}
	checkLatest(t, h, laptop, as[2])
}

// A stalled stream gathers the rounds it missed in its mailbox: entries add
// up into one update, a whole-map change absorbs them; once it reads again
// it ends with the map a full computation gives, without a resync.
func TestStalledStreamComposesUpdates(t *testing.T) {
	for _, withFull := range []bool{false, true} {
		t.Run(fmt.Sprintf("full=%v", withFull), func(t *testing.T) {
			h := controltest.NewHarness(t, 0)
			big := strings.Repeat("x", 250) // maps of several KiB: far over the stalled window
			for i := range 10 {
				addRecord(t, h, fmt.Sprintf("pre%d", i), big)
			}
			// Long names make entries of ~300 bytes, so that a few
			// updates fill the stalled stream's buffers.
			long := strings.Repeat("n", 55)
			as := agents(t, h, "a", "b-"+long, "c-"+long)
			stalled := h.AddAgent(controltest.AgentOptions{Hostname: "slow", HTTPClient: h.StallingHTTPClient(), Stalled: true})
			for _, a := range as {
				a.WaitFor(t, "slow online", peerOnline("slow", true))
			}
			const iterations = 10
			for i := range iterations {
				for _, x := range as[1:] {
					x.Stop()
					as[0].WaitFor(t, x.Name+" offline", peerOnline(x.Name, false))
					x.StartSync()
					as[0].WaitFor(t, x.Name+" online", peerOnline(x.Name, true))
				}
				if withFull && i == iterations/2 {
					addRecord(t, h, "mid", big)
					as[0].WaitFor(t, "mid", hasRecord("mid"))
				}
			}
			as[2].Stop() // the last change: c offline
			as[0].WaitFor(t, "c offline", peerOnline(as[2].Name, false))
			if n := stalled.Count(); n != 0 {
				t.Fatalf("stalled agent finished %d callbacks while blocked", n)
			}
			stalled.Release()
			want := freshMap(t, h, stalled)
			stalled.WaitFor(t, "the latest map", func(m *controltest.Map) bool { return sameMap(m, want) })
			st := stalled.Client.Stats()
			t.Logf("stalled agent: %+v, serials %v", st, stalled.Serials())
			// Without the DNS change the missed rounds are entries only
			// and arrive as updates; with it, a whole map comes too (and
			// absorbs the entries posted after it).
			if st.Resyncs != 0 || (!withFull && st.Updates == 0) || (withFull && st.Maps < 2) {
				t.Fatalf("stalled agent: %+v, want no resync, and updates (entries only) or a whole map after the first (full)", st)
			}
			// 4*iterations+1 rounds touched it; the mailbox merged what
			// the stream missed while blocked.
			if n := stalled.Count(); n > 2*iterations {
				t.Fatalf("stalled agent got %d maps and updates for %d rounds: rounds were not merged", n, 4*iterations+1)
			}
			checkLatest(t, h, append(as[:2:2], stalled)...)
		})
	}
}

// Deleting a peer right after it went offline (the update about it may
// still be pending in a neighbour's mailbox, or merged into the delete's
// round: the test does not force either) ends with the map a fresh sync
// gives, without it, and no resync.
func TestDeletedPeerAfterUpdate(t *testing.T) {
	h := controltest.NewHarness(t, 0)
	ctx := context.Background()
	as := agents(t, h, "a", "b", "c")
	as[0].WaitFor(t, "settled", settled("b", "c"))
	as[2].Stop()
	peers := must[adminv1.ListPeersResponse](t)(h.Admin.ListPeers(ctx, connect.NewRequest(&adminv1.ListPeersRequest{})))
	for _, p := range peers.Peers {
		if p.Name == "c" {
			must[adminv1.DeletePeerResponse](t)(h.Admin.DeletePeer(ctx, connect.NewRequest(&adminv1.DeletePeerRequest{Id: p.Id})))
		}
	}
	as[0].WaitFor(t, "c gone", func(m *controltest.Map) bool { return slices.Equal(controltest.PeerNames(m), []string{"b"}) })
	checkLatest(t, h, as[:2]...)
	if st := as[0].Client.Stats(); st.Resyncs != 0 {
		t.Fatalf("stats %+v", st)
	}
}
