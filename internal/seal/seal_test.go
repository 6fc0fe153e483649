package seal

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"meshd/internal/keys"
)

func pair(t *testing.T) (keys.Private, keys.Private) {
	t.Helper()
	a, err := keys.Generate()
	if err != nil {
		t.Fatal(err)
	}
	b, err := keys.Generate()
	if err != nil {
		t.Fatal(err)
	}
	return a, b
}

func mustBox(tb testing.TB, priv keys.Private, remote keys.Key) *Box {
	tb.Helper()
	b, err := NewBox(priv, remote)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

func TestMessageRoundTripTamperReplay(t *testing.T) {
	a, b := pair(t)
	ab, ba := mustBox(t, a, b.Public()), mustBox(t, b, a.Public())
	now := time.Unix(1_700_000_000, 0)
	g := NewReplayGuard(time.Minute, 16)

	sealed, nonce := ab.SealMessage([]byte("offer"), now)
	got, err := ba.OpenMessage(sealed, nonce[:], g, now)
	if err != nil || string(got) != "offer" {
		t.Fatalf("open = %q, %v", got, err)
	}
	if _, err := ba.OpenMessage(sealed, nonce[:], g, now); !errors.Is(err, ErrReplay) {
		t.Fatalf("replay: err = %v, want ErrReplay", err)
	}
	bad := bytes.Clone(sealed)
	bad[len(bad)-1] ^= 1
	if _, err := ba.OpenMessage(bad, nonce[:], g, now); !errors.Is(err, ErrOpen) {
		t.Fatalf("tampered: err = %v, want ErrOpen", err)
	}
	// A third key cannot open it.
	c, _ := pair(t)
	if _, err := mustBox(t, c, a.Public()).OpenMessage(sealed, nonce[:], NewReplayGuard(time.Minute, 4), now); !errors.Is(err, ErrOpen) {
		t.Fatalf("wrong recipient: err = %v, want ErrOpen", err)
	}
	old, n2 := ab.SealMessage([]byte("old"), now.Add(-2*time.Minute))
	if _, err := ba.OpenMessage(old, n2[:], g, now); !errors.Is(err, ErrStale) {
		t.Fatalf("stale: err = %v, want ErrStale", err)
	}
}

func TestReplayGuardStaysBoundedAndSafe(t *testing.T) {
	g := NewReplayGuard(time.Hour, 8)
	now := time.Unix(1_700_000_000, 0)
	var first [NonceLen]byte
	for i := 0; i < 100; i++ {
		n := Nonce()
		if i == 0 {
			first = n
		}
		if err := g.Check(&n, now.Add(time.Duration(i)*time.Millisecond), now); err != nil {
			t.Fatalf("message %d refused: %v", i, err)
		}
	}
	if len(g.seen) > 8 {
		t.Fatalf("guard holds %d nonces, max 8", len(g.seen))
	}
	// The first nonce was forgotten, but replaying it must still fail.
	if err := g.Check(&first, now, now); err == nil {
		t.Fatal("a forgotten nonce was accepted again")
	}
}

func TestProofAndChallenge(t *testing.T) {
	server, peer := pair(t)
	c := NewChallenger(time.Minute)
	now := time.Unix(1_700_000_000, 0)
	ch, _ := c.Issue(now)
	nonce, sealed, err := Prove(PurposeLogin, ch, server.Public(), peer)
	if err != nil {
		t.Fatal(err)
	}
	if err := VerifyProof(PurposeLogin, ch, nonce[:], sealed, peer.Public(), server); err != nil {
		t.Fatalf("valid proof refused: %v", err)
	}
	if err := VerifyProof(PurposeSync, ch, nonce[:], sealed, peer.Public(), server); !errors.Is(err, ErrProof) {
		t.Fatalf("proof for another purpose: err = %v", err)
	}
	other, _ := pair(t)
	if err := VerifyProof(PurposeLogin, ch, nonce[:], sealed, other.Public(), server); !errors.Is(err, ErrProof) {
		t.Fatalf("proof claimed for another key: err = %v", err)
	}
	if err := c.Use(ch, now); err != nil {
		t.Fatalf("fresh challenge refused: %v", err)
	}
	if err := c.Use(ch, now); !errors.Is(err, ErrChallenge) {
		t.Fatalf("reused challenge: err = %v", err)
	}
	ch2, _ := c.Issue(now)
	if err := c.Use(ch2, now.Add(2*time.Minute)); !errors.Is(err, ErrChallenge) {
		t.Fatalf("expired challenge: err = %v", err)
	}
	ch3, _ := c.Issue(now)
	ch3[10] ^= 1
	if err := c.Use(ch3, now); !errors.Is(err, ErrChallenge) {
		t.Fatalf("forged challenge: err = %v", err)
	}
}
