package store

import (
	"testing"

	"meshd/internal/pgtest"
)

// postgresBackend gives every test a database of its own on the package's
// shared server (it skips without PostgreSQL, unless MESHD_REQUIRE_PG=1).
var postgresBackend = backend{name: "postgres", newTarget: func(t testing.TB) string {
	return pgtest.Shared(t).NewDatabase(t)
}}

var backends = []backend{sqliteBackend, postgresBackend}
