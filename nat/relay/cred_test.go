package relay_test

import (
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"meshd/internal/testutil"
	"meshd/internal/turncred"
	"meshd/nat/relay"
	"meshd/nat/relay/relaytest"
)

// TestExpiredCredentialCannotRefresh: the relay checks a credential's
// expiry on every authenticated request, so once it passes, the
// allocation made with it can no longer be refreshed nor given
// permissions or channels, and the credential makes no new allocation.
func TestExpiredCredentialCannotRefresh(t *testing.T) {
	start := time.Now()
	var skew atomic.Int64
	s := startRelay(t, func(o *relay.Options) {
		o.Now = func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }
	})
	c := turncred.Issue(testSecret, "deleted-peer", start, 10*time.Minute)
	raw, err := relaytest.DialRaw(s.UDPAddr(), c)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Conn.Close()
	peer := netip.MustParseAddrPort("198.51.100.7:9")
	if err := raw.Refresh(10 * time.Minute); err != nil {
		t.Fatalf("refresh while valid: %v", err)
	}
	if err := raw.CreatePermission(peer); err != nil {
		t.Fatalf("permission while valid: %v", err)
	}

	skew.Store(int64(11 * time.Minute)) // the credential expired a minute ago
	before := s.Stats().AuthRefused["expired"]
	if err := raw.Refresh(10 * time.Minute); err == nil {
		t.Error("refresh with an expired credential succeeded")
	}
	if err := raw.CreatePermission(peer); err == nil {
		t.Error("permission with an expired credential granted")
	}
	if err := raw.ChannelBind(relaytest.FirstChannel, peer); err == nil {
		t.Error("channel with an expired credential bound")
	}
	if again, err := relaytest.DialRaw(s.UDPAddr(), c); err == nil {
		again.Conn.Close()
		t.Error("allocation with an expired credential made")
	}
	if got := s.Stats().AuthRefused["expired"] - before; got < 4 {
		t.Errorf("%d requests refused as expired, want 4", got)
	}
}

// TestRevokedPeerAllocationsEnd: with UserValid (control's answer in
// `meshd all`) a deleted peer's credential stops working at once and its
// allocations end within RevokeCheck; other peers keep theirs.
func TestRevokedPeerAllocationsEnd(t *testing.T) {
	var mu sync.Mutex
	deleted := map[string]bool{}
	s := startRelay(t, func(o *relay.Options) {
		o.UserValid = func(id string) bool {
			mu.Lock()
			defer mu.Unlock()
			return !deleted[id]
		}
		o.RevokeCheck = 20 * time.Millisecond
	})
	addr := s.UDPAddr().String()
	a := mustAllocate(t, addr, relaytest.UDP, cred("a"), nil)
	b := mustAllocate(t, addr, relaytest.UDP, cred("b"), nil)
	mustAllocate(t, addr, relaytest.UDP, cred("a"), nil)
	if got := relaytest.Exchange(t, a, b, 10, 500); got != 10*500 {
		t.Fatalf("got %d bytes", got)
	}

	mu.Lock()
	deleted["a"] = true
	mu.Unlock()
	testutil.WaitFor(t, 10*time.Second, "a's allocations to end", func() bool { return s.Stats().Allocations == 1 })
	if _, err := relaytest.Allocate(t, addr, relaytest.UDP, cred("a"), nil); err == nil {
		t.Fatal("a deleted peer's credential made an allocation")
	}
	if st := s.Stats(); st.AuthRefused["revoked"] == 0 || st.Users != 1 {
		t.Fatalf("stats %+v: want a revoked refusal and b alone holding allocations", st)
	}
}

// TestUnrenewedCredentialAllocationEnds: at a relay that cannot ask
// control (no UserValid), an allocation whose credential is never
// renewed ends at the first check after the credential expired, even
// though it was refreshed for an hour just before; a forged renewal does
// not keep it, and another id's allocation is left alone.
func TestUnrenewedCredentialAllocationEnds(t *testing.T) {
	start := time.Now()
	var skew atomic.Int64
	s := startRelay(t, func(o *relay.Options) {
		o.Now = func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }
		o.RevokeCheck = time.Hour // checks run by CheckNow only
	})
	lapsed, err := relaytest.DialRaw(s.UDPAddr(), turncred.Issue(testSecret, "lapsed", start, 10*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	defer lapsed.Conn.Close()
	other, err := relaytest.DialRaw(s.UDPAddr(), turncred.Issue(testSecret, "other", start, time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()

	skew.Store(int64(9 * time.Minute))
	if err := lapsed.Refresh(time.Hour); err != nil {
		t.Fatalf("refresh for an hour while valid: %v", err)
	}
	// A username with a later expiry but without the secret's password
	// fails pion's integrity check and must not count as a renewal.
	forged := turncred.Issue([]byte("not-the-secret"), "lapsed", start, 24*time.Hour)
	lapsed.SetCredential(forged)
	if err := lapsed.Refresh(time.Hour); err == nil {
		t.Fatal("refresh with a forged password succeeded")
	}
	s.CheckNow()
	if got := s.Stats().Allocations; got != 2 {
		t.Fatalf("%d allocations before expiry, want 2", got)
	}

	skew.Store(int64(10*time.Minute + time.Second)) // just expired
	s.CheckNow()
	st := s.Stats()
	if st.Allocations != 1 || st.Users != 1 || st.Refused["expired"] != 1 {
		t.Fatalf("after one check past expiry: %d allocations, %d users, %d ended as expired; want 1, 1, 1",
			st.Allocations, st.Users, st.Refused["expired"])
	}
	if err := other.Refresh(10 * time.Minute); err != nil {
		t.Fatalf("the other id's allocation: %v", err)
	}
	h := s.Metrics()
	if got := scrape(t, h, `meshd_relay_allocations_refused_total{reason="expired"}`); got != 1 {
		t.Fatalf("expired metric %v, want 1", got)
	}
}

// TestRenewedCredentialAllocationSurvives: an allocation whose client
// signs its requests with renewed credentials (an agent's permission
// refreshes) outlives its first credential, while one never renewed ends;
// it ends once the renewed credential expires in turn. The check loop
// runs without UserValid.
func TestRenewedCredentialAllocationSurvives(t *testing.T) {
	start := time.Now()
	var skew atomic.Int64
	s := startRelay(t, func(o *relay.Options) {
		o.Now = func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }
		o.RevokeCheck = 20 * time.Millisecond
	})
	honest, err := relaytest.DialRaw(s.UDPAddr(), turncred.Issue(testSecret, "honest", start, 10*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	defer honest.Conn.Close()
	sentinel, err := relaytest.DialRaw(s.UDPAddr(), turncred.Issue(testSecret, "lapsed", start, 10*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	defer sentinel.Conn.Close()
	peer := netip.MustParseAddrPort("198.51.100.7:9")

	skew.Store(int64(6 * time.Minute)) // control renewed at half-life and a bit
	honest.SetCredential(turncred.Issue(testSecret, "honest", start.Add(6*time.Minute), 10*time.Minute))
	if err := honest.CreatePermission(peer); err != nil {
		t.Fatalf("permission with the renewed credential: %v", err)
	}

	skew.Store(int64(11 * time.Minute)) // the first credentials expired
	testutil.WaitFor(t, 10*time.Second, "the unrenewed allocation to end", func() bool { return s.Stats().Refused["expired"] > 0 })
	if st := s.Stats(); st.Allocations != 1 || st.Users != 1 || st.Refused["expired"] != 1 {
		t.Fatalf("stats %+v: want the renewed id alone holding allocations, one ended as expired", st)
	}
	if err := honest.Refresh(10 * time.Minute); err != nil {
		t.Fatalf("the renewed allocation: %v", err)
	}

	skew.Store(int64(17 * time.Minute)) // the renewed credential expired too
	testutil.WaitFor(t, 10*time.Second, "the renewed allocation to end after its last credential", func() bool { return s.Stats().Allocations == 0 })
}
