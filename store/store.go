// Package store is control's database, on one of two engines behind the
// same methods:
//
//   - SQLite (modernc.org/sqlite, no cgo), a file in --data: the homelab
//     default. WAL mode, a busy timeout, foreign keys on.
//   - PostgreSQL (github.com/jackc/pgx/v5 through its database/sql driver,
//     so that the queries stay database/sql), shared by the replicas of a
//     network: --store postgres://user:pass@host:5432/db?sslmode=...
//
// The queries are written once, with ? placeholders that the PostgreSQL
// side numbers ($1, $2...) in one place (dialect.rebind); upserts (ON
// CONFLICT ... DO UPDATE/NOTHING) and RETURNING read the same on both.
// What differs between the engines lives in dialect.go and nowhere else.
//
// Numbered migrations (migrations/NNNN_name.sql, embedded in the binary)
// are applied at open, all pending ones in one transaction, and the same
// files serve both engines. They are written in SQLite's words; on
// PostgreSQL a short list of rewrites (postgresRewrites) turns INTEGER into
// BIGINT (SQLite's INTEGER has 64 bits), BLOB into BYTEA, the AUTOINCREMENT
// key into an identity column, SQLite's random id into md5(random()), and
// gives the tables that keep lists in order a rowid column (SQLite has one
// already). The schema version is SQLite's PRAGMA user_version (so
// existing databases keep working) and, on PostgreSQL, the one row of table
// schema_version; there a pg_advisory_xact_lock makes replicas that start
// at once migrate one after the other. A database newer than the binary is
// refused (ErrTooNew).
//
// Only internal/control, roles/control and roles/admin import it.
package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	_ "modernc.org/sqlite" // registers the "sqlite" driver
)

// ErrTooNew means the database was written by a newer meshd.
var ErrTooNew = errors.New("store: database is from a newer meshd")

// Store is an open database.
type Store struct {
	d  dialect
	db *sql.DB
	// lazy is, on SQLite, the same database with commits that do not wait
	// for the disk (synchronous=NORMAL), for bookkeeping whose loss in a
	// power cut harms nobody: last-seen and last-used times. Log frames
	// are in commit order, so the next durable commit makes these durable
	// too. On PostgreSQL it is db.
	lazy *sql.DB
	// where is the target with its password hidden, for messages.
	where string
}

// ConnectTimeout bounds how long opening a PostgreSQL store (and every
// later connection to it) waits for the server, unless the URL's
// connect_timeout says otherwise.
const ConnectTimeout = 5 * time.Second

// Open opens (creating if needed) the database at target and migrates it
// to the latest version. target is a SQLite file (a path or
// sqlite:///path) or a PostgreSQL URL (postgres://user:pass@host:port/db).
func Open(ctx context.Context, target string) (*Store, error) {
	return OpenAt(ctx, target, Latest())
}

// OpenAt opens the database and migrates it up to version target. Tests use
// it to build databases of earlier versions.
func OpenAt(ctx context.Context, target string, version int) (*Store, error) {
	return open(ctx, target, version, synchronous)
}

// OpenAsIs opens an existing database without migrating it, for reading
// it whole (Copy) or writing it whole (Copy into an empty database). A
// SQLite file must exist.
func OpenAsIs(ctx context.Context, target string) (*Store, error) {
	if file, ok := sqliteFile(target); ok {
		if _, err := os.Stat(file); err != nil {
			return nil, fmt.Errorf("store: %w", err)
		}
	}
	return open(ctx, target, -1, synchronous)
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

// open opens target and migrates it to version (-1: not at all).
func open(ctx context.Context, target string, version int, sync string) (*Store, error) {
	var s *Store
	var err error
	if file, ok := sqliteFile(target); ok {
		s, err = openSQLite(ctx, file, sync)
	} else {
		s, err = openPostgres(ctx, target)
	}
	if err != nil {
		return nil, err
	}
	if version >= 0 {
		if err := s.migrate(ctx, version); err != nil {
			s.Close()
			return nil, fmt.Errorf("store: %s: %w", s.where, err)
		}
	} else if v, err := s.Version(ctx); err != nil {
		s.Close()
		return nil, err
	} else if v > Latest() {
		s.Close()
		return nil, fmt.Errorf("store: %s: %w", s.where, tooNew(v))
	}
	return s, nil
}

// sqliteFile returns the file of a SQLite target.
func sqliteFile(target string) (string, bool) {
	if f, ok := strings.CutPrefix(target, "sqlite://"); ok {
		return f, true
	}
	return target, !strings.Contains(target, "://")
}

func openSQLite(ctx context.Context, file, sync string) (*Store, error) {
	if file == "" {
		return nil, errors.New("store: no database file given")
	}
	// The database holds control's private key and the TURN secret: only
	// its owner may read it. SQLite creates the -wal and -shm files with the
	// database's mode.
	if f, err := os.OpenFile(file, os.O_RDONLY|os.O_CREATE, 0o600); err == nil {
		f.Close()
	}
	db, err := openSQLiteDB(ctx, file, sync)
	if err != nil {
		return nil, err
	}
	lazy, err := openSQLiteDB(ctx, file, "NORMAL")
	if err != nil {
		db.Close()
		return nil, err
	}
	lazy.SetMaxOpenConns(2)
	return &Store{d: sqliteDialect{}, db: db, lazy: lazy, where: file}, nil
}

func openSQLiteDB(ctx context.Context, file, sync string) (*sql.DB, error) {
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

func openPostgres(ctx context.Context, target string) (*Store, error) {
	where := Redact(target)
	if !strings.HasPrefix(target, "postgres://") && !strings.HasPrefix(target, "postgresql://") {
		return nil, fmt.Errorf("store: %s: want a SQLite file, sqlite:///path or postgres://user:pass@host:port/db", where)
	}
	u, err := url.Parse(target)
	cfg, perr := pgx.ParseConfig(target)
	if err != nil || perr != nil {
		// pgx's message may quote the URL: say only what is wrong.
		return nil, fmt.Errorf("store: %s: not a valid PostgreSQL URL (want postgres://user:pass@host:port/db?sslmode=...)", where)
	}
	if u.Query().Get("connect_timeout") == "" {
		cfg.ConnectTimeout = ConnectTimeout
	}
	db := stdlib.OpenDB(*cfg)
	// Replicas share the server's connections (100 by default).
	db.SetMaxOpenConns(16)
	db.SetMaxIdleConns(4)
	db.SetConnMaxIdleTime(5 * time.Minute)
	// However many addresses the host has, meshd exits within 10 s.
	pctx, cancel := context.WithTimeout(ctx, 8*time.Second)
	defer cancel()
	if err := db.PingContext(pctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("store: connect to %s: %w", where, classify(err))
	}
	return &Store{d: postgresDialect{}, db: db, lazy: db, where: where}, nil
}

// Redact returns target with its password hidden, for logs and messages.
func Redact(target string) string {
	u, err := url.Parse(target)
	if err != nil || u.Scheme == "" || u.Opaque != "" {
		if strings.Contains(target, "://") {
			return "(an unparsable URL)"
		}
		return target
	}
	q := u.Query()
	if q.Has("password") {
		q.Set("password", "xxxxx")
		u.RawQuery = q.Encode()
	}
	return u.Redacted()
}

// Engine is "sqlite" or "postgres".
func (s *Store) Engine() string { return s.d.name() }

// String is where the store is, without its password.
func (s *Store) String() string { return s.where }

// Close closes the database.
func (s *Store) Close() error {
	if s.lazy == s.db {
		return s.db.Close()
	}
	return errors.Join(s.lazy.Close(), s.db.Close())
}

// tx runs fn in a write transaction, committing when fn returns nil.
func (s *Store) tx(ctx context.Context, fn func(*sql.Tx) error) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return classify(err)
	}
	if err := fn(tx); err != nil {
		tx.Rollback()
		return err
	}
	return classify(tx.Commit())
}

// The package's queries go through these: placeholders for the engine,
// and errors of a lost connection marked (IsUnavailable).

func (s *Store) exec(ctx context.Context, h queryer, q string, args ...any) (sql.Result, error) {
	r, err := h.ExecContext(ctx, s.d.rebind(q), args...)
	return r, classify(err)
}

func (s *Store) query(ctx context.Context, h queryer, q string, args ...any) (*sql.Rows, error) {
	r, err := h.QueryContext(ctx, s.d.rebind(q), args...)
	return r, classify(err)
}

// queryRow runs a query that returns one row and scans it into dest.
func (s *Store) queryRow(ctx context.Context, h queryer, q string, args []any, dest ...any) error {
	return classify(h.QueryRowContext(ctx, s.d.rebind(q), args...).Scan(dest...))
}
