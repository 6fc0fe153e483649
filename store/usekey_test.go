package store

import (
	"context"
	"errors"
	"testing"
	"time"
)

// Uses of a setup key are counted in the database: a limited key refuses
// the use past its limit even when the caller's copy (another replica's)
// said there was one left, a revoked key refuses any, on both engines.
func TestUseSetupKeyCountsInTheDatabase(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		s := openTest(t, b)
		populate(t, s) // key "k": limit 5, used twice
		ctx := context.Background()
		k := SetupKey{ID: "k", Name: "bootstrap", LastUsed: time.Unix(1_800_000_000, 0)}
		use := func() error { return s.Write(ctx, func(tx *Tx) error { return tx.UseSetupKey(k) }) }
		for i := range 3 {
			if err := use(); err != nil {
				t.Fatalf("use %d of the 3 left: %v", i+1, err)
			}
		}
		if err := use(); !errors.Is(err, ErrStale) {
			t.Fatalf("use past the limit: %v, want ErrStale", err)
		}
		d, err := s.LoadAccount(ctx, "a")
		if err != nil {
			t.Fatal(err)
		}
		if got := d.SetupKeys[0]; got.Used != 5 || !got.LastUsed.Equal(k.LastUsed) {
			t.Fatalf("key after the uses: used %d, last used %v", got.Used, got.LastUsed)
		}
		// One-off, revoked.
		err = s.Write(ctx, func(tx *Tx) error {
			if err := tx.PutSetupKey(SetupKey{ID: "once", AccountID: "a", Name: "once", Hash: []byte{1}, Prefix: "ON", OneOff: true}); err != nil {
				return err
			}
			return tx.PutSetupKey(SetupKey{ID: "rev", AccountID: "a", Name: "rev", Hash: []byte{2}, Prefix: "RE", Revoked: true})
		})
		if err != nil {
			t.Fatal(err)
		}
		k.ID = "once"
		if err := use(); err != nil {
			t.Fatalf("first use of a one-off key: %v", err)
		}
		if err := use(); !errors.Is(err, ErrStale) {
			t.Fatalf("second use of a one-off key: %v, want ErrStale", err)
		}
		k.ID = "rev"
		if err := use(); !errors.Is(err, ErrStale) {
			t.Fatalf("use of a revoked key: %v, want ErrStale", err)
		}
	})
}
