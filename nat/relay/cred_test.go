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
