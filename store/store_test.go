package store

import (
	"context"
	"database/sql"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// Every earlier schema version, and an empty database, migrates to the latest.
func TestMigrateFromEveryVersion(t *testing.T) {
	ctx := context.Background()
	forEachBackend(t, func(t *testing.T, b backend) {
		for v := 0; v <= Latest(); v++ {
			target := b.newTarget(t)
			old, err := OpenAt(ctx, target, v)
			if err != nil {
				t.Fatalf("build version %d: %v", v, err)
			}
			if got, _ := old.Version(ctx); got != v {
				t.Fatalf("built version %d, got %d", v, got)
			}
			old.Close()
			s, err := Open(ctx, target)
			if err != nil {
				t.Fatalf("migrate from %d: %v", v, err)
			}
			if got, _ := s.Version(ctx); got != Latest() {
				t.Fatalf("from %d: version %d, want %d", v, got, Latest())
			}
			if b.name == "sqlite" {
				var fk, mode string
				s.db.QueryRowContext(ctx, "PRAGMA foreign_keys").Scan(&fk)
				s.db.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode)
				if fk != "1" || mode != "wal" {
					t.Fatalf("foreign_keys=%s journal_mode=%s", fk, mode)
				}
			}
			s.Close()
		}
	})
}

func TestRefusesNewerDatabase(t *testing.T) {
	ctx := context.Background()
	forEachBackend(t, func(t *testing.T, b backend) {
		target := b.newTarget(t)
		s, err := Open(ctx, target)
		if err != nil {
			t.Fatal(err)
		}
		err = s.tx(ctx, func(tx *sql.Tx) error { return s.d.setVersion(ctx, tx, 9999) })
		s.Close()
		if err != nil {
			t.Fatal(err)
		}
		for _, open := range []func(context.Context, string) (*Store, error){Open, OpenAsIs} {
			_, err := open(ctx, target)
			if !errors.Is(err, ErrTooNew) || !strings.Contains(err.Error(), "schema version 9999") {
				t.Fatalf("err = %v, want ErrTooNew naming version 9999", err)
			}
		}
	})
}

// Replicas that start at once on an empty database all open it; the
// migrations run once.
func TestConcurrentOpenMigratesOnce(t *testing.T) {
	ctx := context.Background()
	forEachBackend(t, func(t *testing.T, b backend) {
		target := b.newTarget(t)
		const n = 4
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				s, err := Open(ctx, target)
				if err == nil {
					s.Close()
				}
				errs[i] = err
			})
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("opener %d: %v", i, err)
			}
		}
		s := openTarget(t, target)
		if v, err := s.Version(ctx); err != nil || v != Latest() {
			t.Fatalf("version %d, %v; want %d", v, err, Latest())
		}
	})
}

func TestDatabaseIsPrivate(t *testing.T) {
	file := filepath.Join(t.TempDir(), "meshd.db")
	s, err := Open(context.Background(), file)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, f := range []string{file, file + "-wal"} {
		st, err := os.Stat(f)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %v, want 0600", filepath.Base(f), st.Mode().Perm())
		}
	}
}

// sqlite:///path is the same file as the bare path.
func TestSQLiteURL(t *testing.T) {
	ctx := context.Background()
	file := filepath.Join(t.TempDir(), "meshd.db")
	s, err := Open(ctx, "sqlite://"+file)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Write(ctx, func(tx *Tx) error { return tx.PutSecret("x", []byte("1")) }); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = openTarget(t, file)
	if v, err := s.Secret(ctx, "x"); err != nil || string(v) != "1" {
		t.Fatalf("secret = %q, %v", v, err)
	}
	if s.Engine() != "sqlite" {
		t.Fatalf("engine %s", s.Engine())
	}
}

func TestBadTargets(t *testing.T) {
	ctx := context.Background()
	for target, want := range map[string]string{
		"mysql://u:secret@h/db":                 "want a SQLite file",
		"postgres://u:secret@h:notaport/db":     "not a valid PostgreSQL URL",
		"postgres://u@h/db?sslmode=nonsense":    "not a valid PostgreSQL URL",
		"postgresql://u:secret@h/db?sslmode=no": "not a valid PostgreSQL URL",
	} {
		_, err := Open(ctx, target)
		if err == nil || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "secret") {
			t.Errorf("%s: err = %v, want %q without the password", target, err, want)
		}
	}
	if _, err := OpenAsIs(ctx, filepath.Join(t.TempDir(), "missing.db")); err == nil {
		t.Error("OpenAsIs made a database that did not exist")
	}
}

func TestRedact(t *testing.T) {
	for in, want := range map[string]string{
		"postgres://meshd:hunter2@db:5432/meshd?sslmode=require": "postgres://meshd:xxxxx@db:5432/meshd?sslmode=require",
		"postgres://meshd@db/meshd?password=hunter2":             "postgres://meshd@db/meshd?password=xxxxx",
		"/var/lib/meshd/meshd.db":                                "/var/lib/meshd/meshd.db",
		"sqlite:///var/lib/meshd/meshd.db":                       "sqlite:///var/lib/meshd/meshd.db",
	} {
		if got := Redact(in); got != want {
			t.Errorf("Redact(%s) = %s, want %s", in, got, want)
		}
	}
}

func TestRebind(t *testing.T) {
	q := `SELECT '?' FROM t WHERE a = ? AND b IN (?, ?)`
	if got, want := (postgresDialect{}).rebind(q), `SELECT '?' FROM t WHERE a = $1 AND b IN ($2, $3)`; got != want {
		t.Fatalf("rebind = %s, want %s", got, want)
	}
	if got := (sqliteDialect{}).rebind(q); got != q {
		t.Fatalf("sqlite rebind changed the query: %s", got)
	}
}
