// Package store is control's embedded database: SQLite (modernc.org/sqlite,
// no cgo) in WAL mode with a busy timeout and foreign keys on, and numbered
// migrations embedded in the binary, applied at open. Only
// internal/control and roles/control import it.
package store

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path"
	"sort"
	"strconv"
	"strings"

	_ "modernc.org/sqlite" // registers the "sqlite" driver
)

//go:embed migrations/*.sql
var migrationFS embed.FS

// ErrTooNew means the database was written by a newer meshd.
var ErrTooNew = errors.New("store: database is from a newer meshd")

// Store is an open database.
type Store struct {
	DB *sql.DB
	// lazy is the same database with commits that do not wait for the
	// disk (synchronous=NORMAL), for bookkeeping whose loss in a power cut
	// harms nobody: last-seen and last-used times. Log frames are in
	// commit order, so the next durable commit makes these durable too.
	lazy *sql.DB
}

// Migration is one numbered schema step.
type Migration struct {
	Version int
	Name    string
	SQL     string
}

// Migrations returns the embedded migrations in order. Files are named
// NNNN_name.sql; the numbers start at 1 and have no gaps.
func Migrations() ([]Migration, error) {
	entries, err := fs.ReadDir(migrationFS, "migrations")
	if err != nil {
		return nil, err
	}
	var ms []Migration
	for _, e := range entries {
		num, name, ok := strings.Cut(strings.TrimSuffix(e.Name(), ".sql"), "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil {
			return nil, fmt.Errorf("store: migration file %s: want NNNN_name.sql", e.Name())
		}
		b, err := fs.ReadFile(migrationFS, path.Join("migrations", e.Name()))
		if err != nil {
			return nil, err
		}
		ms = append(ms, Migration{Version: v, Name: name, SQL: string(b)})
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].Version < ms[j].Version })
	for i, m := range ms {
		if m.Version != i+1 {
			return nil, fmt.Errorf("store: migrations must be numbered 1..n without gaps; found %d at position %d", m.Version, i+1)
		}
	}
	return ms, nil
}

// Latest is the schema version this binary writes.
func Latest() int {
	ms, err := Migrations()
	if err != nil {
		panic(err)
	}
	return len(ms)
}

// Open opens (creating if needed) the database at file and migrates it to
// the latest version.
func Open(ctx context.Context, file string) (*Store, error) {
	return OpenAt(ctx, file, Latest())
}

// synchronous is SQLite's durability of a commit. In WAL mode NORMAL syncs
// the log only at checkpoints: a commit survives a crash of meshd but not
// one of the machine, which can take back a revoked setup key, a deleted
// peer or a new admin token that was already reported done. FULL syncs the
// log at every commit. Control's writes through Write are admin changes
// and logins, not a stream, so they are durable; the frequent ones (a
// peer going offline, an admin token used) go through Store.lazy.
// BenchmarkCommit measures both.
const synchronous = "FULL"

// OpenAt opens the database and migrates it up to version target. Tests use
// it to build databases of earlier versions.
func OpenAt(ctx context.Context, file string, target int) (*Store, error) {
	return openAt(ctx, file, target, synchronous)
}

func openAt(ctx context.Context, file string, target int, sync string) (*Store, error) {
	// The database holds control's private key and the TURN secret: only
	// its owner may read it. SQLite creates the -wal and -shm files with the
	// database's mode.
	if f, err := os.OpenFile(file, os.O_RDONLY|os.O_CREATE, 0o600); err == nil {
		f.Close()
	}
	db, err := openDB(ctx, file, sync)
	if err != nil {
		return nil, err
	}
	s := &Store{DB: db}
	if err := s.migrate(ctx, target); err != nil {
		db.Close()
		return nil, fmt.Errorf("store: %s: %w", file, err)
	}
	if s.lazy, err = openDB(ctx, file, "NORMAL"); err != nil {
		db.Close()
		return nil, err
	}
	s.lazy.SetMaxOpenConns(2)
	return s, nil
}

func openDB(ctx context.Context, file, sync string) (*sql.DB, error) {
	q := url.Values{}
	for _, p := range []string{"journal_mode(WAL)", "busy_timeout(10000)", "foreign_keys(1)", "synchronous(" + sync + ")"} {
		q.Add("_pragma", p)
	}
	q.Set("_txlock", "immediate")
	db, err := sql.Open("sqlite", "file:"+file+"?"+q.Encode())
	if err != nil {
		return nil, fmt.Errorf("store: open %s: %w", file, err)
	}
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("store: open %s: %w", file, err)
	}
	return db, nil
}

// Version returns the schema version of the open database.
func (s *Store) Version(ctx context.Context) (int, error) {
	var v int
	err := s.DB.QueryRowContext(ctx, "PRAGMA user_version").Scan(&v)
	return v, err
}

func (s *Store) migrate(ctx context.Context, target int) error {
	ms, err := Migrations()
	if err != nil {
		return err
	}
	cur, err := s.Version(ctx)
	if err != nil {
		return err
	}
	if cur > len(ms) {
		return fmt.Errorf("%w: schema version %d, this binary knows up to %d; run a newer meshd", ErrTooNew, cur, len(ms))
	}
	for _, m := range ms[cur:target] {
		tx, err := s.DB.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, m.SQL); err != nil {
			tx.Rollback()
			return fmt.Errorf("migration %04d_%s: %w", m.Version, m.Name, err)
		}
		if _, err := tx.ExecContext(ctx, fmt.Sprintf("PRAGMA user_version = %d", m.Version)); err != nil {
			tx.Rollback()
			return fmt.Errorf("migration %04d_%s: %w", m.Version, m.Name, err)
		}
		if err := tx.Commit(); err != nil {
			return fmt.Errorf("migration %04d_%s: %w", m.Version, m.Name, err)
		}
	}
	return nil
}

// Close closes the database.
func (s *Store) Close() error { return errors.Join(s.lazy.Close(), s.DB.Close()) }

// Tx runs fn in a write transaction, committing when fn returns nil.
func (s *Store) Tx(ctx context.Context, fn func(*sql.Tx) error) error {
	tx, err := s.DB.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	if err := fn(tx); err != nil {
		tx.Rollback()
		return err
	}
	return tx.Commit()
}
