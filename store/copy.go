package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
)

// ErrNotEmpty means Copy's target already holds a meshd database.
var ErrNotEmpty = errors.New("store: the target already holds a meshd database")

// Copy copies the whole network in from (every table: accounts, peers,
// keys, groups, policies, routes, DNS, the audit log, admin tokens, the
// secrets with control's keys and the TURN secret, the serial high-water
// marks) into to, which must be empty (no meshd schema). from may be of an
// older schema: to gets the same schema, the rows, then the migrations up
// to the latest, all in one transaction, so that a failed copy leaves to
// empty. from is read in one transaction and not changed. Open both with
// OpenAsIs.
func Copy(ctx context.Context, from, to *Store) error {
	v, err := from.Version(ctx)
	switch {
	case err != nil:
		return fmt.Errorf("store: copy: source %s: %w", from, err)
	case v == 0:
		return fmt.Errorf("store: copy: source %s holds no meshd database", from)
	case v > Latest():
		return fmt.Errorf("store: copy: source %s: %w", from, tooNew(v))
	}
	tables, err := copyOrder(ctx, from, v)
	if err != nil {
		return fmt.Errorf("store: copy: source %s: %w", from, err)
	}
	// A snapshot of the source: nothing written meanwhile half-shows.
	src, err := from.db.BeginTx(ctx, &sql.TxOptions{ReadOnly: from.d.name() == "postgres", Isolation: snapshot(from)})
	if err != nil {
		return fmt.Errorf("store: copy: source %s: %w", from, classify(err))
	}
	defer src.Rollback()
	err = to.tx(ctx, func(tx *sql.Tx) error {
		if err := to.d.beginMigration(ctx, tx); err != nil {
			return classify(err)
		}
		if cur, err := to.d.version(ctx, tx); err != nil {
			return classify(err)
		} else if cur != 0 {
			return fmt.Errorf("%w (schema version %d): copy into a new, empty database", ErrNotEmpty, cur)
		}
		if err := to.migrateTx(ctx, tx, 0, v); err != nil {
			return err
		}
		for _, t := range tables {
			if err := copyTable(ctx, from, src, to, tx, t); err != nil {
				return fmt.Errorf("table %s: %w", t, err)
			}
		}
		if err := to.d.afterCopy(ctx, tx); err != nil {
			return classify(err)
		}
		return to.migrateTx(ctx, tx, v, Latest())
	})
	if err != nil {
		return fmt.Errorf("store: copy to %s: %w", to, err)
	}
	return nil
}

func snapshot(s *Store) sql.IsolationLevel {
	if s.d.name() == "postgres" {
		return sql.LevelRepeatableRead
	}
	return sql.LevelDefault // SQLite: a transaction reads one snapshot
}

var createTable = regexp.MustCompile(`(?i)\bCREATE TABLE\s+(?:IF NOT EXISTS\s+)?(\w+)`)

// copyOrder returns from's tables in the order the migrations up to
// version v create them, so that every table comes after the tables its
// foreign keys point to.
func copyOrder(ctx context.Context, from *Store, v int) ([]string, error) {
	ms, err := Migrations()
	if err != nil {
		return nil, err
	}
	have, err := from.d.tables(ctx, from.db)
	if err != nil {
		return nil, classify(err)
	}
	var out []string
	for _, m := range ms[:v] {
		for _, match := range createTable.FindAllStringSubmatch(m.SQL, -1) {
			// cluster_*: which replicas of the old setup were alive and what
			// they held; nothing of it is true of the new one.
			if t := match[1]; slices.Contains(have, t) && !slices.Contains(out, t) && !strings.HasPrefix(t, "cluster_") {
				out = append(out, t)
			}
		}
	}
	return out, nil
}

// copyTable copies the rows of table, in the order they were written.
func copyTable(ctx context.Context, from *Store, src *sql.Tx, to *Store, dst *sql.Tx, table string) error {
	cols, err := columns(ctx, src, table)
	if err != nil {
		return classify(err)
	}
	q := "SELECT " + strings.Join(cols, ", ") + " FROM " + table
	if o := from.d.insertOrder(table); o != "" {
		q += " ORDER BY " + o
	}
	rows, err := src.QueryContext(ctx, q)
	if err != nil {
		return classify(err)
	}
	defer rows.Close()
	ins, err := dst.PrepareContext(ctx, to.d.rebind(fmt.Sprintf("INSERT INTO %s (%s) VALUES (%s)",
		table, strings.Join(cols, ", "), strings.TrimSuffix(strings.Repeat("?, ", len(cols)), ", "))))
	if err != nil {
		return classify(err)
	}
	defer ins.Close()
	vals := make([]any, len(cols))
	ptrs := make([]any, len(cols))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	for rows.Next() {
		if err := rows.Scan(ptrs...); err != nil {
			return classify(err)
		}
		if _, err := ins.ExecContext(ctx, vals...); err != nil {
			return classify(err)
		}
	}
	return classify(rows.Err())
}

// columns are table's columns, without the rowid PostgreSQL's ordered
// tables have (the target counts its own).
func columns(ctx context.Context, q queryer, table string) ([]string, error) {
	rows, err := q.QueryContext(ctx, "SELECT * FROM "+table+" LIMIT 0")
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		return nil, err
	}
	return slices.DeleteFunc(cols, func(c string) bool { return c == "rowid" }), nil
}
