package control_test

import (
	"context"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	adminv1 "meshd/api/admin/v1"
	"meshd/internal/control"
	"meshd/internal/control/controltest"
)

// onlineOn returns whether the admin API of h says peer name is online.
func onlineOn(t *testing.T, h *controltest.Harness, name string) bool {
	t.Helper()
	p := must[adminv1.Peer](t)(h.Admin.GetPeer(context.Background(), connect.NewRequest(&adminv1.GetPeerRequest{Id: name})))
	return p.Online
}

// waitAdmin polls cond (an admin answer) until it holds, within spread.
func waitAdmin(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(spread)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s within %s", what, spread)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A peer streaming from one replica is online on every replica, in maps
// and admin answers; an ephemeral peer is removed once, by one replica, and
// only after it went offline everywhere.
func TestReplicasPresenceAndEphemeral(t *testing.T) {
	// Replicas do not expire while the test moves the clock by minutes.
	r := controltest.NewReplicas(t, 2, controltest.WithOptions(func(o *control.Options) { o.ReplicaTTL = 24 * time.Hour }))
	ctx := context.Background()
	key := createKey(t, r[0], &adminv1.CreateSetupKeyRequest{Name: "ci", Ephemeral: true})
	must[adminv1.Account](t)(r[0].Admin.UpdateAccount(ctx, connect.NewRequest(&adminv1.UpdateAccountRequest{
		EphemeralOfflineSeconds: ptr(int64(300))})))
	watch := r[0].AddAgent(controltest.AgentOptions{Hostname: "watch"})
	// One ephemeral peer streams from each replica: whichever replica
	// holds the janitor's lease, one of them streams from the other.
	e0 := r[0].AddAgent(controltest.AgentOptions{Hostname: "e0", SetupKey: key})
	e1 := r[1].AddAgent(controltest.AgentOptions{Hostname: "e1", SetupKey: key})
	watch.WaitFor(t, "e0 and e1 online", func(m *controltest.Map) bool { return peerOnline("e0", true)(m) && peerOnline("e1", true)(m) })
	for _, h := range r {
		for _, name := range []string{"e0", "e1"} {
			waitAdmin(t, name+" online on "+h.URL, func() bool { return onlineOn(t, h, name) })
		}
	}
	st := must[adminv1.ServerStatus](t)(r[1].Admin.GetServerStatus(ctx, connect.NewRequest(&adminv1.GetServerStatusRequest{})))
	if st.PeersOnline != 3 {
		t.Fatalf("replica B counts %d peers online, want 3", st.PeersOnline)
	}

	// Long past the offline time, but streaming: kept.
	r[0].Clock.Advance(10 * time.Minute)
	addRecord(t, r[0], "tick", "x")
	addRecord(t, r[1], "tock", "x")
	watch.WaitFor(t, "tick and tock", func(m *controltest.Map) bool { return hasRecord("tick")(m) && hasRecord("tock")(m) })
	for _, name := range []string{"e0", "e1"} {
		if !onlineOn(t, r[1], name) || !onlineOn(t, r[0], name) {
			t.Fatalf("%s went offline or was removed while streaming", name)
		}
	}

	e0.Stop()
	e1.Stop()
	watch.WaitFor(t, "e0 and e1 offline", func(m *controltest.Map) bool { return peerOnline("e0", false)(m) && peerOnline("e1", false)(m) })
	for _, h := range r {
		for _, name := range []string{"e0", "e1"} {
			waitAdmin(t, name+" offline on "+h.URL, func() bool { return !onlineOn(t, h, name) })
		}
	}
	r[0].Clock.Advance(6 * time.Minute)
	watch.WaitFor(t, "e0 and e1 removed", settled())
	evs := must[adminv1.ListEventsResponse](t)(r[1].Admin.ListEvents(ctx, connect.NewRequest(&adminv1.ListEventsRequest{})))
	removed := map[string]int{}
	for _, e := range evs.Events {
		if e.Action == "peer.deleted" {
			removed[e.TargetName]++
		}
	}
	if removed["e0"] != 1 || removed["e1"] != 1 || len(removed) != 2 {
		t.Fatalf("removals recorded: %v, want e0 and e1 once each", removed)
	}
}

// relayOf is a replica's own relay in TestReplicasListed.
func relayOf(publicURL string) string {
	u, _ := url.Parse(publicURL)
	return "stun:relay-" + u.Port() + ".test:3478"
}

// Maps list every replica's control URL (the agent's own replica first)
// and every replica's relays; the server status lists the replicas. A
// replica that stops leaves the lists.
func TestReplicasListed(t *testing.T) {
	r := controltest.NewReplicas(t, 2, controltest.WithOptions(func(o *control.Options) {
		o.Relays.URLs = []string{relayOf(o.PublicURL)}
	}))
	ctx := context.Background()
	a := r[0].AddAgent(controltest.AgentOptions{Hostname: "a"})
	b := r[1].AddAgent(controltest.AgentOptions{Hostname: "b"})
	for i, x := range []*controltest.Agent{a, b} {
		self, other := r[i], r[1-i]
		m := x.WaitFor(t, "both control URLs", func(m *controltest.Map) bool { return len(m.ControlUrls) == 2 })
		if !slices.Equal(m.ControlUrls, []string{self.URL, other.URL}) {
			t.Fatalf("%s: control urls %v, want its replica's first: %v", x.Name, m.ControlUrls, []string{self.URL, other.URL})
		}
		if len(m.Relays) != 1 || !slices.Equal(m.Relays[0].Urls, []string{relayOf(self.URL), relayOf(other.URL)}) {
			t.Fatalf("%s: relays %v, want both replicas'", x.Name, m.Relays)
		}
	}
	st := must[adminv1.ServerStatus](t)(r[1].Admin.GetServerStatus(ctx, connect.NewRequest(&adminv1.GetServerStatusRequest{})))
	byURL := map[string]*adminv1.Replica{}
	for _, x := range st.Replicas {
		byURL[x.PublicUrl] = x
	}
	if !st.StoreAvailable || len(byURL) != 2 || byURL[r[0].URL] == nil || byURL[r[1].URL] == nil ||
		st.ReplicaId != byURL[r[1].URL].Id || byURL[r[0].URL].Version == "" || byURL[r[0].URL].LastSeen == nil {
		t.Fatalf("status = %v", st)
	}

	// B stops; once its heartbeats are older than the TTL, A's agents
	// hear of A alone.
	r[1].Service.Close()
	r[0].Clock.Advance(control.DefaultReplicaTTL + time.Second)
	a.WaitFor(t, "control urls without B", func(m *controltest.Map) bool { return slices.Equal(m.ControlUrls, []string{r[0].URL}) })
	if m := a.Latest(); len(m.Relays) != 1 || !slices.Equal(m.Relays[0].Urls, []string{relayOf(r[0].URL)}) {
		t.Fatalf("relays after B stopped: %v", m.Relays)
	}
	st = must[adminv1.ServerStatus](t)(r[0].Admin.GetServerStatus(ctx, connect.NewRequest(&adminv1.GetServerStatusRequest{})))
	if len(st.Replicas) != 1 {
		t.Fatalf("replicas after B stopped: %v", st.Replicas)
	}
}

// A replica that loses the database keeps serving its streams from memory
// and says so, refuses changes with a clear error, and resumes without a
// restart when the database is back, catching up with what the other
// replica changed meanwhile.
func TestReplicaLosesDatabase(t *testing.T) {
	r := controltest.NewReplicas(t, 2)
	ctx := context.Background()
	a := r[0].AddAgent(controltest.AgentOptions{Hostname: "a"})
	c := r[0].AddAgent(controltest.AgentOptions{Hostname: "c"})
	b := r[1].AddAgent(controltest.AgentOptions{Hostname: "b"})
	a.WaitFor(t, "b and c online", func(m *controltest.Map) bool { return peerOnline("b", true)(m) && peerOnline("c", true)(m) })
	c.Stop()
	a.WaitFor(t, "c offline", peerOnline("c", false))

	r[0].Faults.Lose("dial tcp 10.0.0.5:5432: connection refused")
	_, err := r[0].Admin.CreateDNSRecord(ctx, connect.NewRequest(&adminv1.CreateDNSRecordRequest{Name: "x", Type: "TXT", Value: "x"}))
	if connect.CodeOf(err) != connect.CodeUnavailable || !strings.Contains(err.Error(),
		"store unavailable: dial tcp 10.0.0.5:5432: connection refused; changes are refused until the database is back") {
		t.Fatalf("write while the database is lost: %v", err)
	}
	st := must[adminv1.ServerStatus](t)(r[0].Admin.GetServerStatus(ctx, connect.NewRequest(&adminv1.GetServerStatusRequest{})))
	if st.StoreAvailable || !strings.Contains(st.StoreError, "connection refused") || st.StoreDownSince == nil {
		t.Fatalf("status while the database is lost: %v", st)
	}
	// Streams are served from memory: c comes back on A, and a hears of it.
	c.StartSync()
	a.WaitFor(t, "c online again", peerOnline("c", true))
	// A change through B waits for A's database.
	must[adminv1.Peer](t)(r[1].Admin.UpdatePeer(ctx, connect.NewRequest(&adminv1.UpdatePeerRequest{Id: b.Self.PeerId, Name: ptr("b2")})))
	b.WaitFor(t, "nothing", func(*controltest.Map) bool { return true })

	r[0].Faults.Restore()
	a.WaitFor(t, "B's change, after the database is back", listed("b2", true))
	waitAdmin(t, "writes accepted again", func() bool {
		_, err := r[0].Admin.CreateDNSRecord(ctx, connect.NewRequest(&adminv1.CreateDNSRecordRequest{Name: "x", Type: "TXT", Value: "x"}))
		return err == nil
	})
	st = must[adminv1.ServerStatus](t)(r[0].Admin.GetServerStatus(ctx, connect.NewRequest(&adminv1.GetServerStatusRequest{})))
	if !st.StoreAvailable || st.StoreError != "" {
		t.Fatalf("status after the database is back: %v", st)
	}
	a.WaitFor(t, "record x", hasRecord("x"))
	b.WaitFor(t, "record x", hasRecord("x"))
	if s := a.Serials(); !slices.IsSorted(s) || len(slices.Compact(slices.Clone(s))) != len(s) {
		t.Fatalf("serials of a, across the outage, not strictly increasing: %v", s)
	}
	checkLatest(t, r[0], a, c)
	checkLatest(t, r[1], b)
}
