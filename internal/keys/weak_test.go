package keys_test

import (
	"errors"
	"testing"

	"golang.org/x/crypto/curve25519"

	"meshd/internal/keys"
	"meshd/internal/keys/keystest"
)

func TestCheckPublicRefusesSmallOrder(t *testing.T) {
	weak := keystest.Weak()
	if len(weak) != 14 { // 7 points below 2^255, each also with the top bit set
		t.Fatalf("only %d encodings", len(weak))
	}
	priv, err := keys.Generate()
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range weak {
		// The oracle: X25519 with any scalar gives the all-zero output.
		if _, err := curve25519.X25519(priv.Bytes()[:], k[:]); err == nil {
			t.Fatalf("%x: X25519 accepts it: not a small-order encoding, the test's list is wrong", k)
		}
		if err := k.CheckPublic(); !errors.Is(err, keys.ErrWeakKey) {
			t.Errorf("CheckPublic(%x) = %v, want keys.ErrWeakKey", k, err)
		}
		if _, err := keys.ParsePublic(k.String()); !errors.Is(err, keys.ErrWeakKey) {
			t.Errorf("keys.ParsePublic(%x) = %v, want keys.ErrWeakKey", k, err)
		}
		if _, err := keys.PublicFromBytes(k[:]); !errors.Is(err, keys.ErrWeakKey) {
			t.Errorf("keys.PublicFromBytes(%x) = %v, want keys.ErrWeakKey", k, err)
		}
	}
}

func TestCheckPublicRefusesNonCanonical(t *testing.T) {
	// Every value from p = 2^255-19 to 2^255-1.
	for b0 := 0xed; b0 <= 0xff; b0++ {
		var k keys.Key
		for i := range k {
			k[i] = 0xff
		}
		k[0], k[31] = byte(b0), 0x7f
		if err := k.CheckPublic(); !errors.Is(err, keys.ErrWeakKey) {
			t.Errorf("CheckPublic(%x) = %v, want keys.ErrWeakKey", k, err)
		}
	}
	// The largest canonical value p-1 is the point of order 2 (refused as
	// such); p-2 is canonical and of large order.
	var k keys.Key
	for i := range k {
		k[i] = 0xff
	}
	k[0], k[31] = 0xeb, 0x7f
	if err := k.CheckPublic(); err != nil {
		t.Errorf("CheckPublic(p-2) = %v", err)
	}
}

func TestCheckPublicAcceptsGenerated(t *testing.T) {
	for range 200 {
		p, err := keys.Generate()
		if err != nil {
			t.Fatal(err)
		}
		if err := p.Public().CheckPublic(); err != nil {
			t.Fatalf("a generated key is refused: %v", err)
		}
	}
}
