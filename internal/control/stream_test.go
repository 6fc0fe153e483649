package control_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	adminv1 "meshd/api/admin/v1"
	"meshd/internal/control"
	"meshd/internal/control/controltest"
	"meshd/internal/controlclient"
)

func hasRecord(name string) func(*controltest.Map) bool {
	return func(m *controltest.Map) bool {
		for _, r := range m.GetDns().GetRecords() {
			if r.Name == name {
				return true
			}
		}
		return false
	}
}

func addRecord(t *testing.T, h *controltest.Harness, name, value string) {
	t.Helper()
	must[adminv1.DNSRecord](t)(h.Admin.CreateDNSRecord(context.Background(), connect.NewRequest(&adminv1.CreateDNSRecordRequest{
		Name: name, Type: "TXT", Value: value})))
}

// A policy change sends new maps to the peers it concerns only.
func TestOnlyAffectedPeersGetNewMaps(t *testing.T) {
	h := controltest.NewHarness(t, 0)
	ctx := context.Background()
	as := agents(t, h, "eng-1", "eng-2", "db", "x", "y")
	must[adminv1.Group](t)(h.Admin.CreateGroup(ctx, connect.NewRequest(&adminv1.CreateGroupRequest{Name: "eng", Peers: []string{"eng-1", "eng-2"}})))
	must[adminv1.Group](t)(h.Admin.CreateGroup(ctx, connect.NewRequest(&adminv1.CreateGroupRequest{Name: "servers", Peers: []string{"db"}})))
	must[adminv1.Group](t)(h.Admin.CreateGroup(ctx, connect.NewRequest(&adminv1.CreateGroupRequest{Name: "misc", Peers: []string{"x", "y"}})))
	must[adminv1.Policy](t)(h.Admin.CreatePolicy(ctx, connect.NewRequest(&adminv1.CreatePolicyRequest{Name: "web",
		Sources: []string{"eng"}, Destinations: []string{"servers"}, Protocol: "tcp", Ports: []string{"443"}})))
	must[adminv1.Policy](t)(h.Admin.CreatePolicy(ctx, connect.NewRequest(&adminv1.CreatePolicyRequest{Name: "misc",
		Sources: []string{"misc"}, Destinations: []string{"misc"}, Bidirectional: true})))
	must[adminv1.DeletePolicyResponse](t)(h.Admin.DeletePolicy(ctx, connect.NewRequest(&adminv1.DeletePolicyRequest{Id: "Default"})))
	as[0].WaitFor(t, "settled", settled("db"))
	as[1].WaitFor(t, "settled", settled("db"))
	as[2].WaitFor(t, "settled", settled("eng-1", "eng-2"))
	as[3].WaitFor(t, "settled", settled("y"))
	as[4].WaitFor(t, "settled", settled("x"))
	before := make([]int, len(as))
	for i, a := range as {
		before[i] = a.Count()
	}

	// Opening ssh from eng to servers concerns eng-1, eng-2 and db.
	must[adminv1.Policy](t)(h.Admin.UpdatePolicy(ctx, connect.NewRequest(&adminv1.UpdatePolicyRequest{Id: "web",
		Ports: &adminv1.StringList{Values: []string{"443", "22"}}})))
	for _, a := range as[:3] {
		a.WaitFor(t, "ssh rule", func(m *controltest.Map) bool {
			return len(m.FirewallRules) > 0 && len(m.FirewallRules[0].Ports) == 2
		})
	}
	// Then a change for everyone; its map follows any other on each stream.
	addRecord(t, h, "marker", "after the policy change")
	for _, a := range as {
		a.WaitFor(t, "marker", hasRecord("marker"))
	}
	for i, a := range as {
		got, want := a.Count()-before[i], 1
		if i < 3 {
			want = 2
		}
		if got != want {
			t.Errorf("%s got %d new maps, want %d", a.Name, got, want)
		}
	}
}

// Serials only grow on every stream, across reconnects and restarts.
func TestSerialsOnlyGrow(t *testing.T) {
	h := controltest.NewHarness(t, 3)
	for i := range 5 {
		addRecord(t, h, fmt.Sprintf("r%d", i), "x")
	}
	for _, a := range h.Agents {
		a.WaitFor(t, "r4", hasRecord("r4"))
	}
	h.Restart()
	addRecord(t, h, "after-restart", "x")
	for _, a := range h.Agents {
		a.WaitFor(t, "after-restart", hasRecord("after-restart"))
		s := a.Serials()
		if !slices.IsSorted(s) || len(slices.Compact(slices.Clone(s))) != len(s) {
			t.Fatalf("%s serials not strictly increasing: %v", a.Name, s)
		}
	}
}

// A stream whose reader stalls holds up nobody, and once it reads again it
// gets the newest map rather than every map it missed.
func TestStalledStreamDoesNotDelayOthers(t *testing.T) {
	h := controltest.NewHarness(t, 3)
	big := strings.Repeat("x", 250) // maps of several KiB: far over the stalled window
	for i := range 10 {
		addRecord(t, h, fmt.Sprintf("pre%d", i), big)
	}
	stalled := h.AddAgent(controltest.AgentOptions{Hostname: "slow", HTTPClient: h.StallingHTTPClient(), Stalled: true})
	// The stalled agent is blocked in its first map callback; the others
	// see it online.
	for _, a := range h.Agents {
		a.WaitFor(t, "slow online", func(m *controltest.Map) bool { return slices.Contains(controltest.PeerNames(m), "slow") })
	}
	const changes = 40
	for i := range changes {
		addRecord(t, h, fmt.Sprintf("r%d", i), big)
		for _, a := range h.Agents {
			a.WaitFor(t, fmt.Sprintf("record r%d", i), hasRecord(fmt.Sprintf("r%d", i)))
		}
	}
	if n := stalled.Count(); n != 0 {
		t.Fatalf("stalled agent finished %d callbacks while blocked", n)
	}
	stalled.Release()
	m := stalled.WaitFor(t, "latest map", hasRecord(fmt.Sprintf("r%d", changes-1)))
	if len(m.Dns.Records) != 10+changes {
		t.Fatalf("stalled agent's latest map has %d records, want %d", len(m.Dns.Records), 10+changes)
	}
	t.Logf("stalled agent got maps %v", stalled.Serials())
	// A few maps were already written into HTTP/2 buffers before control's
	// send blocked; after that, only the latest.
	if n := stalled.Count(); n > 6 {
		t.Fatalf("stalled agent got %d maps for %d changes: the latest map should win", n, changes)
	}
}

// Restarting control on the same database keeps the account, peers,
// addresses, groups, policies, tokens and keys; agents reconnect and get
// the same maps with higher serials.
func TestRestartKeepsEverything(t *testing.T) {
	h := controltest.NewHarness(t, 0)
	ctx := context.Background()
	as := agents(t, h, "a", "b", "c")
	must[adminv1.Group](t)(h.Admin.CreateGroup(ctx, connect.NewRequest(&adminv1.CreateGroupRequest{Name: "ab", Peers: []string{"a", "b"}})))
	must[adminv1.Policy](t)(h.Admin.CreatePolicy(ctx, connect.NewRequest(&adminv1.CreatePolicyRequest{Name: "ab",
		Sources: []string{"ab"}, Destinations: []string{"ab"}, Protocol: "udp", Ports: []string{"53"}})))
	must[adminv1.DeletePolicyResponse](t)(h.Admin.DeletePolicy(ctx, connect.NewRequest(&adminv1.DeletePolicyRequest{Id: "Default"})))
	key := createKey(t, h, &adminv1.CreateSetupKeyRequest{Name: "later", UsageLimit: 5})
	as[0].WaitFor(t, "b", settled("b"))
	as[1].WaitFor(t, "a", settled("a"))
	as[2].WaitFor(t, "nobody", settled())
	beforeMaps := renderMaps(as...)
	beforePeers := must[adminv1.ListPeersResponse](t)(h.Admin.ListPeers(ctx, connect.NewRequest(&adminv1.ListPeersRequest{})))
	lastSerial := as[0].Latest().Serial
	boot := h.Boot

	h.Restart()
	if h.Boot.AdminToken != boot.AdminToken || h.Boot.JoinToken != boot.JoinToken || h.Boot.Created {
		t.Fatalf("bootstrap changed on restart: %+v vs %+v", h.Boot, boot)
	}
	// Agents reconnect (the old streams ended); wait for a map from the new
	// control.
	for _, a := range as {
		a.WaitFor(t, "map after restart", func(m *controltest.Map) bool { return m.Serial > lastSerial })
	}
	as[0].WaitFor(t, "b", settled("b"))
	as[1].WaitFor(t, "a", settled("a"))
	if got := renderMaps(as...); got != beforeMaps {
		t.Fatalf("maps changed across restart:\nbefore\n%s\nafter\n%s", beforeMaps, got)
	}
	afterPeers := must[adminv1.ListPeersResponse](t)(h.Admin.ListPeers(ctx, connect.NewRequest(&adminv1.ListPeersRequest{})))
	for i, p := range afterPeers.Peers {
		q := beforePeers.Peers[i]
		if p.Id != q.Id || p.OverlayIp != q.OverlayIp || p.PublicKey != q.PublicKey || !slices.Equal(p.Groups, q.Groups) {
			t.Fatalf("peer changed across restart: %v vs %v", p, q)
		}
	}
	// The key made before the restart still works, and a new peer gets a
	// fresh address.
	d := h.AddAgent(controltest.AgentOptions{Hostname: "d", SetupKey: key})
	if d.Self.OverlayIp != "100.64.0.4" {
		t.Fatalf("new peer after restart got %s", d.Self.OverlayIp)
	}
}

// Deleting a peer ends its stream with a typed error, and the others stop
// seeing it.
func TestDeletedPeerSyncEnds(t *testing.T) {
	h := controltest.NewHarness(t, 2)
	victim := h.Agents[1]
	must[adminv1.DeletePeerResponse](t)(h.Admin.DeletePeer(context.Background(), connect.NewRequest(&adminv1.DeletePeerRequest{Id: victim.Name})))
	err := victim.WaitDone(t)
	if !errors.Is(err, controlclient.ErrPeerUnknown) {
		t.Fatalf("sync of a deleted peer returned %v", err)
	}
	h.Agents[0].WaitFor(t, "victim gone", settled())
	// Rejoining with a setup key gives it a new identity in the network.
	if err := victim.Login(""); err != nil {
		t.Fatalf("rejoin: %v", err)
	}
}

// With login expiration, a connected opted-in peer is cut off with the error the
// agent shows, cannot log in without a key, and can with one.
func TestLoginExpiry(t *testing.T) {
	h := controltest.NewHarness(t, 1)
	a := h.Agents[0]
	setPeerExpiry(t, h, a.Name, true) // setup-key peers are exempt unless opted in
	must[adminv1.Account](t)(h.Admin.UpdateAccount(context.Background(), connect.NewRequest(&adminv1.UpdateAccountRequest{
		LoginExpirationSeconds: ptr(int64(3600))})))
	m := a.WaitFor(t, "login expiry in map", func(m *controltest.Map) bool { return m.Self.LoginExpires != nil })
	if got, want := m.Self.LoginExpires.AsTime(), h.Clock.Now().Add(time.Hour); !got.Equal(want) {
		t.Fatalf("login expires %s, want %s", got, want)
	}
	h.Clock.Advance(2 * time.Hour)
	err := a.WaitDone(t)
	if !errors.Is(err, controlclient.ErrLoginExpired) || !strings.HasPrefix(err.Error(), "login expired: run meshd up --setup-key KEY") {
		t.Fatalf("sync after expiry: %v", err)
	}
	if err := a.LoginWith(""); !errors.Is(err, controlclient.ErrLoginExpired) {
		t.Fatalf("login without key after expiry: %v", err)
	}
	if err := a.Login(""); err != nil {
		t.Fatalf("login with key after expiry: %v", err)
	}
	a.StartSync()
	a.WaitFor(t, "map after renewal", func(m *controltest.Map) bool {
		return m.Self.LoginExpires.AsTime().Equal(h.Clock.Now().Add(time.Hour))
	})
}

// An ephemeral peer is removed once it stayed offline long enough; peers
// show online state and last-seen times.
func TestEphemeralPeerRemovedAndOnlineState(t *testing.T) {
	h := controltest.NewHarness(t, 1)
	ctx := context.Background()
	key := createKey(t, h, &adminv1.CreateSetupKeyRequest{Name: "ci", Ephemeral: true})
	must[adminv1.Account](t)(h.Admin.UpdateAccount(ctx, connect.NewRequest(&adminv1.UpdateAccountRequest{
		EphemeralOfflineSeconds: ptr(int64(300))})))
	eph := h.AddAgent(controltest.AgentOptions{Hostname: "ci-runner", SetupKey: key})
	h.Agents[0].WaitFor(t, "ci online", settled("ci-runner"))
	eph.Stop()
	h.Agents[0].WaitFor(t, "ci offline", func(m *controltest.Map) bool {
		return len(m.Peers) == 1 && !m.Peers[0].Online && m.Peers[0].LastSeen != nil
	})
	p := must[adminv1.Peer](t)(h.Admin.GetPeer(ctx, connect.NewRequest(&adminv1.GetPeerRequest{Id: "ci-runner"})))
	if p.Online || !p.Ephemeral || !p.LastSeen.AsTime().Equal(h.Clock.Now()) {
		t.Fatalf("peer = %v", p)
	}
	// Not yet: 4 minutes offline.
	h.Clock.Advance(4 * time.Minute)
	addRecord(t, h, "tick", "x") // a round trip through control after a janitor pass or more
	h.Agents[0].WaitFor(t, "tick", hasRecord("tick"))
	if _, err := h.Admin.GetPeer(ctx, connect.NewRequest(&adminv1.GetPeerRequest{Id: "ci-runner"})); err != nil {
		t.Fatalf("removed too early: %v", err)
	}
	h.Clock.Advance(2 * time.Minute)
	h.Agents[0].WaitFor(t, "ci removed", settled())
	if _, err := h.Admin.GetPeer(ctx, connect.NewRequest(&adminv1.GetPeerRequest{Id: "ci-runner"})); connect.CodeOf(err) != connect.CodeNotFound {
		t.Fatalf("ephemeral peer still there: %v", err)
	}
	evs := must[adminv1.ListEventsResponse](t)(h.Admin.ListEvents(ctx, connect.NewRequest(&adminv1.ListEventsRequest{})))
	last := evs.Events[len(evs.Events)-1]
	if last.Action != "peer.deleted" || last.Actor != "system" || last.TargetName != "ci-runner" {
		t.Fatalf("last event = %v", last)
	}
}

// TURN credentials are refreshed on the stream before they expire.
func TestRelayCredentialsRefreshed(t *testing.T) {
	h := controltest.NewHarness(t, 1, controltest.WithOptions(func(o *control.Options) {
		withRelays(o)
		o.Relays.TTL = time.Second // refreshed after max(1s, half of it)
	}))
	a := h.Agents[0]
	first := a.Latest().Relays[1].Username
	h.Clock.Advance(time.Hour)
	m := a.WaitFor(t, "new credential", func(m *controltest.Map) bool { return m.Relays[1].Username != first })
	if !m.Relays[1].Expires.AsTime().Equal(h.Clock.Now().Add(time.Second)) {
		t.Fatalf("refreshed credential expires %s", m.Relays[1].Expires.AsTime())
	}
}

// Fresh TURN credentials come at half the old ones' lifetime, so an
// agent's relayed sessions can renew with them long before they expire.
func TestRelayCredentialsRefreshedAtHalfLife(t *testing.T) {
	const ttl = 10 * time.Second
	h := controltest.NewHarness(t, 1, controltest.WithOptions(func(o *control.Options) {
		withRelays(o)
		o.Relays.TTL = ttl
	}))
	a := h.Agents[0]
	n := len(a.Serials())
	start := time.Now()
	a.WaitCount(t, n+1)
	if took := time.Since(start); took > ttl*7/10 {
		t.Fatalf("the next map came %v after the first, want about %v (half of %v)", took, ttl/2, ttl)
	}
	if got := a.Latest().Relays[1].Expires.AsTime(); !got.Equal(h.Clock.Now().Add(ttl)) {
		t.Fatalf("refreshed credential expires %s, want %s", got, h.Clock.Now().Add(ttl))
	}
}
