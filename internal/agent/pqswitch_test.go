package agent

import (
	"testing"
	"time"

	"meshd/internal/testutil"
)

// TestPQModeSwitchUnderRunningTunnels: the account's mode changes under
// running tunnels. Strict cuts a tunnel that runs without a key at once
// (not when its session expires, minutes later) and leaves a pair with a
// key alone; off removes the keys on both sides, and both tunnels run
// plain.
func TestPQModeSwitchUnderRunningTunnels(t *testing.T) {
	w := newWorld(t)
	w.setPQ("permissive")
	a, b, c := w.pqAgent("pqa", false), w.pqAgent("pqb", false), w.pqAgent("plain", true)
	da, ipa := waitUp(t, a)
	db, ipb := waitUp(t, b)
	dc, ipc := waitUp(t, c)
	waitPing(t, da, ipb, 15*time.Second)
	waitPing(t, da, ipc, 15*time.Second)
	samePQKey(t, a, b, ipa, ipb, 15*time.Second)

	w.setPQ("strict")
	testutil.WaitFor(t, 10*time.Second, "the plain tunnel cut both ways", func() bool {
		return ping(da, ipc, 200*time.Millisecond) != nil && ping(dc, ipa, 200*time.Millisecond) != nil
	})
	for range 10 {
		if ping(da, ipc, 100*time.Millisecond) == nil || ping(dc, ipa, 100*time.Millisecond) == nil {
			t.Fatal("traffic without a post-quantum key in strict mode")
		}
	}
	waitPing(t, da, ipb, 5*time.Second) // the pair with a key goes on

	w.setPQ("off")
	testutil.WaitFor(t, 10*time.Second, "keys removed on both sides", func() bool {
		return devPSK(t, da, b.PublicKey()) == nil && devPSK(t, db, a.PublicKey()) == nil &&
			devPSK(t, da, c.PublicKey()) == nil && devPSK(t, dc, a.PublicKey()) == nil
	})
	waitPing(t, da, ipb, 15*time.Second)
	waitPing(t, da, ipc, 15*time.Second)
	if p := pqPeer(a, ipb); p.PostQuantum {
		t.Fatalf("post_quantum after off: %+v", p)
	}
}
