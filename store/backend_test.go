package store

import (
	"path/filepath"
	"testing"
)

// backend is an engine the store's tests run on.
type backend struct {
	name string
	// newTarget returns an empty database of its own for t.
	newTarget func(t testing.TB) string
}

var sqliteBackend = backend{name: "sqlite", newTarget: func(t testing.TB) string {
	return filepath.Join(t.TempDir(), "meshd.db")
}}

// forEachBackend runs fn as a subtest on SQLite and on PostgreSQL.
func forEachBackend(t *testing.T, fn func(t *testing.T, b backend)) {
	t.Helper()
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) { fn(t, b) })
	}
}

// openTest opens a new empty database of b (SQLite when b is omitted)
// for tb.
func openTest(tb testing.TB, b ...backend) *Store {
	tb.Helper()
	be := sqliteBackend
	if len(b) > 0 {
		be = b[0]
	}
	return openTarget(tb, be.newTarget(tb))
}

// openTarget opens target (migrated) for tb.
func openTarget(tb testing.TB, target string) *Store {
	tb.Helper()
	s, err := Open(tb.Context(), target)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}
