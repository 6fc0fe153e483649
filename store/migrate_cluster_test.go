package store

import (
	"context"
	"testing"
)

// Migration 0007 adds the tables replicas share on PostgreSQL
// (store/pgcluster); it changes no existing row, so it has no seed, and a
// database of every earlier version must reach it.
func init() {
	seeds[7] = nil
	checks[7] = func(t *testing.T, s *Store, d *AccountData) {
		if v, err := s.Version(context.Background()); err != nil || v < 7 {
			t.Errorf("schema version %d (%v), want at least 7", v, err)
		}
	}
}
