package store

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// Every earlier schema version, and an empty database, migrates to the latest.
func TestMigrateFromEveryVersion(t *testing.T) {
	ctx := context.Background()
	for v := 0; v <= Latest(); v++ {
		file := filepath.Join(t.TempDir(), "meshd.db")
		old, err := OpenAt(ctx, file, v)
		if err != nil {
			t.Fatalf("build version %d: %v", v, err)
		}
		if got, _ := old.Version(ctx); got != v {
			t.Fatalf("built version %d, got %d", v, got)
		}
		old.Close()
		s, err := Open(ctx, file)
		if err != nil {
			t.Fatalf("migrate from %d: %v", v, err)
		}
		if got, _ := s.Version(ctx); got != Latest() {
			t.Fatalf("from %d: version %d, want %d", v, got, Latest())
		}
		var fk, mode string
		s.DB.QueryRowContext(ctx, "PRAGMA foreign_keys").Scan(&fk)
		s.DB.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode)
		if fk != "1" || mode != "wal" {
			t.Fatalf("foreign_keys=%s journal_mode=%s", fk, mode)
		}
		s.Close()
	}
}

func TestRefusesNewerDatabase(t *testing.T) {
	ctx := context.Background()
	file := filepath.Join(t.TempDir(), "meshd.db")
	s, err := Open(ctx, file)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.DB.ExecContext(ctx, "PRAGMA user_version = 9999"); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if _, err := Open(ctx, file); !errors.Is(err, ErrTooNew) {
		t.Fatalf("err = %v, want ErrTooNew", err)
	}
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
