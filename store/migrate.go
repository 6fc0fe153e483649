package store

import (
	"context"
	"database/sql"
	"embed"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strconv"
	"strings"
)

//go:embed migrations/*.sql
var migrationFS embed.FS

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

func tooNew(v int) error {
	return fmt.Errorf("%w: schema version %d, this binary knows up to %d; run a newer meshd", ErrTooNew, v, Latest())
}

// Version returns the schema version of the open database (0: empty).
func (s *Store) Version(ctx context.Context) (int, error) {
	v, err := s.d.version(ctx, s.db)
	if err != nil {
		return 0, fmt.Errorf("store: schema version: %w", classify(err))
	}
	return v, nil
}

// migrate brings the schema up to version target in one transaction.
func (s *Store) migrate(ctx context.Context, target int) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		if err := s.d.beginMigration(ctx, tx); err != nil {
			return classify(err)
		}
		cur, err := s.d.version(ctx, tx)
		if err != nil {
			return classify(err)
		}
		return s.migrateTx(ctx, tx, cur, target)
	})
}

// migrateTx applies the migrations after version cur up to target in tx.
func (s *Store) migrateTx(ctx context.Context, tx *sql.Tx, cur, target int) error {
	ms, err := Migrations()
	if err != nil {
		return err
	}
	if cur > len(ms) {
		return tooNew(cur)
	}
	if target > len(ms) {
		target = len(ms)
	}
	if cur >= target {
		return nil
	}
	for _, m := range ms[cur:target] {
		if _, err := tx.ExecContext(ctx, s.d.migrationSQL(m.SQL)); err != nil {
			return fmt.Errorf("migration %04d_%s: %w", m.Version, m.Name, classify(err))
		}
	}
	if err := s.d.setVersion(ctx, tx, target); err != nil {
		return fmt.Errorf("record schema version %d: %w", target, classify(err))
	}
	return nil
}
