package wg

import (
	"testing"
	"time"

	"meshd/internal/testutil"
)

func lastHandshake(tb testing.TB, n *node) (time.Time, *[32]byte) {
	tb.Helper()
	st, err := n.dev.Stats()
	must(tb, err)
	if len(st) != 1 {
		tb.Fatalf("stats: %+v", st)
	}
	return st[0].LastHandshake, st[0].PresharedKey
}

// TestPresharedKey: a pre-shared key shows in the stats (as in `wg show`),
// a handshake needs the same key on both sides, and a key that differs
// leaves the session in use working.
func TestPresharedKey(t *testing.T) {
	a, b := newNode(t, 1), newNode(t, 2)
	must(t, a.dev.SetPeer(a.peer(b)))
	must(t, b.dev.SetPeer(b.peer(a)))
	psk := [32]byte{1, 2, 3}
	pk := a.dev.(PresharedKeyer)
	must(t, pk.SetPresharedKey(b.pub, &psk))
	must(t, b.dev.(PresharedKeyer).SetPresharedKey(a.pub, &psk))
	must(t, a.dev.SetDirect(b.pub, b.loopback()))
	must(t, b.dev.SetDirect(a.pub, a.loopback()))
	echoServer(t, b, 7)
	c := dial(t, a, b, 7)
	roundTrip(t, c, 1<<16)
	hs1, got := lastHandshake(t, a)
	if got == nil || *got != psk {
		t.Fatalf("stats show preshared key %x, want %x", got, psk)
	}

	// Only a's key changes: the next handshake fails, the session stays.
	other := [32]byte{9}
	must(t, pk.SetPresharedKey(b.pub, &other))
	// Rekey is held back within 5 s of the last initiation: ask until
	// one goes out (148 bytes more sent; nothing else flows meanwhile).
	st0, _ := a.dev.Stats()
	testutil.WaitFor(t, 10*time.Second, "an initiation with the other key", func() bool {
		must(t, a.dev.(Rekeyer).Rekey(b.pub))
		st, _ := a.dev.Stats()
		return st[0].TxBytes >= st0[0].TxBytes+148
	})
	roundTrip(t, c, 1<<16)
	if hs, _ := lastHandshake(t, a); !hs.Equal(hs1) {
		t.Fatal("a handshake completed with different pre-shared keys")
	}

	// Both agree again: a new handshake completes.
	must(t, b.dev.(PresharedKeyer).SetPresharedKey(a.pub, &other))
	testutil.WaitFor(t, 10*time.Second, "handshake with the new key", func() bool {
		must(t, a.dev.(Rekeyer).Rekey(b.pub))
		hs, _ := lastHandshake(t, a)
		return hs.After(hs1)
	})
	roundTrip(t, c, 1<<16)
	must(t, pk.SetPresharedKey(b.pub, nil))
	if _, got := lastHandshake(t, a); got != nil {
		t.Fatalf("removed key still shown: %x", got)
	}
}
