package pgtest_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"meshd/internal/pgtest"
)

func connect(t *testing.T, dsn string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("connect %s: %v", dsn, err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// TestStartStopKeepsData starts a server, writes through a password DSN,
// stops it (connections refused), starts it again on the same port and
// reads the data back.
func TestStartStopKeepsData(t *testing.T) {
	s := pgtest.Start(t, pgtest.Options{})
	dsn := s.NewDatabase(t)
	ctx := context.Background()
	conn := connect(t, dsn)
	if _, err := conn.Exec(ctx, "CREATE TABLE kv (k TEXT PRIMARY KEY, v TEXT); INSERT INTO kv VALUES ('a', 'b')"); err != nil {
		t.Fatal(err)
	}
	conn.Close(ctx)

	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if c, err := pgx.Connect(cctx, dsn); err == nil {
		c.Close(ctx)
		t.Fatal("connected to a stopped server")
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	var v string
	if err := connect(t, dsn).QueryRow(ctx, "SELECT v FROM kv WHERE k = 'a'").Scan(&v); err != nil || v != "b" {
		t.Fatalf("after restart: v=%q err=%v", v, err)
	}
}

// TestWrongPasswordRefused shows the TCP DSN really authenticates.
func TestWrongPasswordRefused(t *testing.T) {
	s := pgtest.Shared(t)
	dsn := s.NewDatabase(t)
	connect(t, dsn)
	bad := "postgres://" + pgtest.User + ":wrong@" + s.Addr() + "/postgres?sslmode=disable"
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if c, err := pgx.Connect(ctx, bad); err == nil {
		c.Close(ctx)
		t.Fatal("a wrong password was accepted")
	}
}

// TestNewDatabaseIsolatedAndDropped gives two tests' databases separate
// tables and drops each at its test's end.
func TestNewDatabaseIsolatedAndDropped(t *testing.T) {
	s := pgtest.Shared(t)
	ctx := context.Background()
	var first string
	t.Run("a", func(t *testing.T) {
		first = s.NewDatabase(t)
		if _, err := connect(t, first).Exec(ctx, "CREATE TABLE only_here (x INT)"); err != nil {
			t.Fatal(err)
		}
	})
	second := s.NewDatabase(t)
	if second == first {
		t.Fatal("two databases with one DSN")
	}
	var n int
	if err := connect(t, second).QueryRow(ctx, "SELECT count(*) FROM pg_tables WHERE tablename = 'only_here'").Scan(&n); err != nil || n != 0 {
		t.Fatalf("table of another database visible: n=%d err=%v", n, err)
	}
	if err := connect(t, s.DSN("postgres")).QueryRow(ctx, "SELECT count(*) FROM pg_database WHERE datname = $1",
		filepath.Base(mustPath(t, first))).Scan(&n); err != nil || n != 0 {
		t.Fatalf("database of a finished test not dropped: n=%d err=%v", n, err)
	}
}

// TestTerminateCutsConnections: a connection cut by Terminate fails its
// next query, and a new one works.
func TestTerminateCutsConnections(t *testing.T) {
	s := pgtest.Shared(t)
	dsn := s.NewDatabase(t)
	ctx := context.Background()
	conn := connect(t, dsn)
	if err := s.Terminate(dsn); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "SELECT 1"); err == nil {
		t.Fatal("a terminated connection still works")
	}
	if _, err := connect(t, dsn).Exec(ctx, "SELECT 1"); err != nil {
		t.Fatal(err)
	}
}

// TestCloseRemovesDirectory: after the server's test ends, nothing of it
// is left in /tmp.
func TestCloseRemovesDirectory(t *testing.T) {
	before, _ := filepath.Glob("/tmp/meshd-pg-*")
	var dsn string
	t.Run("server", func(t *testing.T) {
		dsn = pgtest.Start(t, pgtest.Options{}).DSN("postgres")
	})
	if dsn == "" {
		t.Skip("the server subtest skipped")
	}
	after, _ := filepath.Glob("/tmp/meshd-pg-*")
	seen := map[string]bool{}
	for _, d := range before {
		seen[d] = true
	}
	for _, d := range after {
		if !seen[d] {
			if _, err := os.Stat(d); err == nil {
				t.Errorf("%s left behind", d)
			}
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if c, err := pgx.Connect(ctx, dsn); err == nil {
		c.Close(ctx)
		t.Fatal("server still running after its test ended")
	}
}

func mustPath(t *testing.T, dsn string) string {
	t.Helper()
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	return cfg.Database
}

// TestCPUTime: the server's CPU time grows when it works.
func TestCPUTime(t *testing.T) {
	s := pgtest.Shared(t)
	before, err := s.CPUTime()
	if err != nil {
		t.Fatal(err)
	}
	conn := connect(t, s.NewDatabase(t))
	if _, err := conn.Exec(context.Background(), "SELECT count(*) FROM generate_series(1, 2000000)"); err != nil {
		t.Fatal(err)
	}
	after, err := s.CPUTime()
	if err != nil {
		t.Fatal(err)
	}
	if after <= before {
		t.Fatalf("CPU time %v → %v after a query that takes CPU", before, after)
	}
}
