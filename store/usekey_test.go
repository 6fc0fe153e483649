package store

import (
	"context"
	"errors"
	"testing"
	"time"
)

// A use of a setup key counted against a stale count (another replica used
// the key meanwhile) is refused, on both engines; a fresh one is written.
func TestUseSetupKeyRefusesStaleCount(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		s := openTest(t, b)
		populate(t, s) // key "k" used twice
		ctx := context.Background()
		k := SetupKey{ID: "k", Name: "bootstrap", Used: 3, LastUsed: time.Unix(1_800_000_000, 0)}
		if err := s.Write(ctx, func(tx *Tx) error { return tx.UseSetupKey(k) }); err != nil {
			t.Fatalf("use with the count in the database: %v", err)
		}
		// A second replica that also saw two uses.
		err := s.Write(ctx, func(tx *Tx) error { return tx.UseSetupKey(k) })
		if !errors.Is(err, ErrStale) {
			t.Fatalf("use with a stale count: %v, want ErrStale", err)
		}
		// Revoked through another replica.
		err = s.Write(ctx, func(tx *Tx) error {
			return tx.PutSetupKey(SetupKey{ID: "k", AccountID: "a", Name: "bootstrap", Hash: []byte{9, 9}, Prefix: "AB",
				UsageLimit: 5, Used: 3, Revoked: true, LastUsed: k.LastUsed})
		})
		if err != nil {
			t.Fatal(err)
		}
		late := k
		late.Used = 4
		if err := s.Write(ctx, func(tx *Tx) error { return tx.UseSetupKey(late) }); !errors.Is(err, ErrStale) {
			t.Fatalf("use of a revoked key: %v, want ErrStale", err)
		}
		d, err := s.LoadAccount(ctx, "a")
		if err != nil {
			t.Fatal(err)
		}
		if got := d.SetupKeys[0]; got.Used != 3 || !got.LastUsed.Equal(k.LastUsed) {
			t.Fatalf("key after the uses: used %d, last used %v", got.Used, got.LastUsed)
		}
	})
}
