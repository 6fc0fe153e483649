package control_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"connectrpc.com/connect"

	adminv1 "meshd/api/admin/v1"
	"meshd/internal/control/controltest"
	"meshd/internal/controlclient"
)

// expiryEvents returns the audit events recording login expiries of peer.
func expiryEvents(t *testing.T, h *controltest.Harness, peer string) int {
	t.Helper()
	ev := must[adminv1.ListEventsResponse](t)(h.Admin.ListEvents(context.Background(), connect.NewRequest(&adminv1.ListEventsRequest{Limit: 500})))
	n := 0
	for _, e := range ev.Events {
		if e.Action == "peer.login_expired" && e.TargetName == peer {
			n++
		}
	}
	return n
}

// waitExpiryEvents waits until peer has n expiry events.
func waitExpiryEvents(t *testing.T, h *controltest.Harness, peer string, n int) {
	t.Helper()
	deadline := time.Now().Add(controltest.WaitTimeout)
	for expiryEvents(t, h, peer) != n {
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d login expiry events, want %d", peer, expiryEvents(t, h, peer), n)
		}
		time.Sleep(5 * time.Millisecond) // polling the audit log, bounded by the deadline
	}
}

func setPeerExpiry(t *testing.T, h *controltest.Harness, peer string, on bool) *adminv1.Peer {
	t.Helper()
	return must[adminv1.Peer](t)(h.Admin.UpdatePeer(context.Background(), connect.NewRequest(&adminv1.UpdatePeerRequest{
		Id: peer, LoginExpirationEnabled: ptr(on)})))
}

func setAccountExpiry(t *testing.T, h *controltest.Harness, d time.Duration) *adminv1.Account {
	t.Helper()
	return must[adminv1.Account](t)(h.Admin.UpdateAccount(context.Background(), connect.NewRequest(&adminv1.UpdateAccountRequest{
		LoginExpirationSeconds: ptr(int64(d / time.Second))})))
}

// Login expiration spares peers that joined with a setup key unless an
// admin opts one in; each expiry is an audit event, recorded once; the
// account update says how many peers the value expires; turning the setting
// or the peer's opt-in off lets expired peers log in again.
func TestLoginExpirationOptIn(t *testing.T) {
	h := controltest.NewHarness(t, 2)
	server, laptop := h.Agents[0], h.Agents[1]
	if p := setPeerExpiry(t, h, "agent-0", false); p.LoginExpirationEnabled {
		t.Fatal("opt-out did not stick")
	}
	p := must[adminv1.Peer](t)(h.Admin.GetPeer(context.Background(), connect.NewRequest(&adminv1.GetPeerRequest{Id: "agent-1"})))
	if p.LoginExpirationEnabled {
		t.Fatal("a peer joined with a setup key has login expiration on by default")
	}
	if a := setAccountExpiry(t, h, 2*time.Minute); a.LoginExpiredPeers != 0 {
		t.Fatalf("expired peers = %d right after turning expiration on, want 0", a.LoginExpiredPeers)
	}
	h.Clock.Advance(time.Hour)
	// The admin opts the laptop in: its login is an hour old, so it expires
	// at once; the server (not opted in) stays connected.
	setPeerExpiry(t, h, "agent-1", true)
	if err := laptop.WaitDone(t); !errors.Is(err, controlclient.ErrLoginExpired) {
		t.Fatalf("opted-in peer: sync ended with %v, want login expired", err)
	}
	waitExpiryEvents(t, h, "agent-1", 1)
	if !server.Connected() || server.SyncErr() != nil || expiryEvents(t, h, "agent-0") != 0 {
		t.Fatalf("a setup-key peer was expired: connected %v, err %v", server.Connected(), server.SyncErr())
	}
	if err := laptop.LoginWith(""); !errors.Is(err, controlclient.ErrLoginExpired) {
		t.Fatalf("expired peer logged in without a key: %v", err)
	}
	if a := setAccountExpiry(t, h, 30*time.Minute); a.LoginExpiredPeers != 1 {
		t.Fatalf("account update: %d expired peers, want 1 (the opted-in laptop)", a.LoginExpiredPeers)
	}

	// Turning the setting off restores the laptop.
	if a := setAccountExpiry(t, h, 0); a.LoginExpiredPeers != 0 {
		t.Fatalf("expiration off: %d expired peers", a.LoginExpiredPeers)
	}
	if err := laptop.LoginWith(""); err != nil {
		t.Fatalf("expiration turned off, but the expired peer cannot log in: %v", err)
	}
	// On again, the next expiry is a new event; the peer's opt-out then
	// restores it.
	setAccountExpiry(t, h, 2*time.Minute)
	h.Clock.Advance(time.Hour)
	waitExpiryEvents(t, h, "agent-1", 2)
	if err := laptop.LoginWith(""); !errors.Is(err, controlclient.ErrLoginExpired) {
		t.Fatalf("second expiry: login %v", err)
	}
	setPeerExpiry(t, h, "agent-1", false)
	if err := laptop.LoginWith(""); err != nil {
		t.Fatalf("opted out, but the expired peer cannot log in: %v", err)
	}
	if n := expiryEvents(t, h, "agent-1"); n != 2 {
		t.Fatalf("%d expiry events, want one per expiry (2)", n)
	}
}

// Refusals say what happened, which key or why in parentheses, then what to
// do, once.
func TestRefusalMessages(t *testing.T) {
	h := controltest.NewHarness(t, 1)
	ctx := context.Background()
	key := createKey(t, h, &adminv1.CreateSetupKeyRequest{Name: "laptops"})
	must[adminv1.SetupKey](t)(h.Admin.UpdateSetupKey(ctx, connect.NewRequest(&adminv1.UpdateSetupKeyRequest{Id: "laptops", Revoked: ptr(true)})))
	err := h.NewAgent(controltest.AgentOptions{Hostname: "x"}).Login(key)
	if want := "setup key revoked (key \"laptops\"): create a new one with `meshd admin setup-keys create`"; err == nil || err.Error() != want {
		t.Fatalf("revoked key: %v\nwant %s", err, want)
	}
	err = h.NewAgent(controltest.AgentOptions{Hostname: "y"}).LoginWith("")
	if want := "peer not registered (never joined, or deleted by an admin): run meshd up --setup-key KEY"; err == nil || err.Error() != want {
		t.Fatalf("unknown peer: %v\nwant %s", err, want)
	}
	must[adminv1.DeletePeerResponse](t)(h.Admin.DeletePeer(ctx, connect.NewRequest(&adminv1.DeletePeerRequest{Id: "agent-0"})))
	err = h.Agents[0].WaitDone(t)
	if want := "peer not registered (deleted by an admin): run meshd up --setup-key KEY"; err == nil || err.Error() != want {
		t.Fatalf("deleted peer: %v\nwant %s", err, want)
	}
}
