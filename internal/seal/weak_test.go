package seal

import (
	"errors"
	"testing"
	"time"

	"golang.org/x/crypto/nacl/box"

	"meshd/internal/keys"
	"meshd/internal/keys/keystest"
)

// TestWeakKeyProofRefused forges a proof the way an attacker would: with a
// small-order claimed key the shared secret does not depend on any private
// key, so box.Precompute with an arbitrary private key yields the server's
// shared key. The forgery must be refused.
func TestWeakKeyProofRefused(t *testing.T) {
	server, attacker := pair(t)
	c := NewChallenger(time.Minute)
	now := time.Unix(1_700_000_000, 0)
	for _, weak := range keystest.Weak() {
		ch, _ := c.Issue(now)
		var shared [32]byte
		box.Precompute(&shared, weak.Bytes(), attacker.Bytes()) // what the server computed before
		n := Nonce()
		sealed := box.SealAfterPrecomputation(nil, append([]byte(PurposeLogin), ch...), &n, &shared)
		err := VerifyProof(PurposeLogin, ch, n[:], sealed, weak, server)
		if !errors.Is(err, ErrProof) || !errors.Is(err, keys.ErrWeakKey) {
			t.Errorf("forged proof for %x: err = %v, want ErrProof and ErrWeakKey", weak, err)
		}
		if _, err := NewBox(attacker, weak); !errors.Is(err, keys.ErrWeakKey) {
			t.Errorf("NewBox(%x): err = %v, want ErrWeakKey", weak, err)
		}
		if _, _, err := Prove(PurposeLogin, ch, weak, attacker); !errors.Is(err, keys.ErrWeakKey) {
			t.Errorf("Prove to server key %x: err = %v, want ErrWeakKey", weak, err)
		}
	}
}

// TestNewBoxMatchesPrecompute: for honest keys NewBox derives the key that
// box.Precompute does, so both sides interoperate with plain NaCl box.
func TestNewBoxMatchesPrecompute(t *testing.T) {
	a, b := pair(t)
	var want [32]byte
	box.Precompute(&want, b.Public().Bytes(), a.Bytes())
	if got := mustBox(t, a, b.Public()); got.shared != want {
		t.Fatal("NewBox's shared key differs from box.Precompute's")
	}
}
