package pgcluster_test

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap/zaptest"

	"meshd/internal/cluster"
	"meshd/internal/cluster/clustertest"
	"meshd/internal/pgtest"
	"meshd/internal/testutil"
	"meshd/store/pgcluster"
)

// migrate gives the database at dsn the cluster tables (migration 0007)
// and the schema version the store would record.
func migrate(t testing.TB, dsn string, version int) {
	t.Helper()
	sql, err := os.ReadFile("../migrations/0007_cluster.sql")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, string(sql)); err != nil {
		t.Fatalf("migration 0007: %v", err)
	}
	if _, err := conn.Exec(ctx, "CREATE TABLE schema_version (version INTEGER NOT NULL)"); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "INSERT INTO schema_version VALUES ($1)", version); err != nil {
		t.Fatal(err)
	}
}

func open(t testing.TB, dsn string) *pgcluster.Cluster {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	c, err := pgcluster.Open(ctx, dsn, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestConformance(t *testing.T) {
	srv := pgtest.Shared(t)
	clustertest.Run(t, func(t *testing.T) clustertest.Pair {
		dsn := srv.NewDatabase(t)
		migrate(t, dsn, pgcluster.SchemaVersion)
		return clustertest.Pair{A: open(t, dsn), B: open(t, dsn), Cut: func(tb testing.TB) {
			if err := srv.Terminate(dsn); err != nil {
				tb.Fatal(err)
			}
		}}
	})
}

func TestOpenRefusesOldSchema(t *testing.T) {
	srv := pgtest.Shared(t)
	ctx := context.Background()

	dsn := srv.NewDatabase(t)
	_, err := pgcluster.Open(ctx, dsn, zaptest.NewLogger(t))
	if err == nil || !strings.Contains(err.Error(), "run meshd control (or all) with this --store first") {
		t.Fatalf("open of an empty database: %v, want the advice to run meshd control first", err)
	}

	dsn = srv.NewDatabase(t)
	migrate(t, dsn, 6)
	_, err = pgcluster.Open(ctx, dsn, zaptest.NewLogger(t))
	if err == nil || !strings.Contains(err.Error(), "schema version 6") {
		t.Fatalf("open of a version-6 database: %v", err)
	}
}

func TestOpenUnreachable(t *testing.T) {
	ctx := context.Background()
	start := time.Now()
	// A port nobody listens on: connection refused, at once.
	_, err := pgcluster.Open(ctx, "postgres://u:p@127.0.0.1:1/db?sslmode=disable", zaptest.NewLogger(t))
	if err == nil || !strings.Contains(err.Error(), "127.0.0.1:1/db") {
		t.Fatalf("open of an unreachable database: %v, want an error naming host and database", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("took %v to fail", d)
	}
	if _, err := pgcluster.Open(ctx, "postgres://%zz", zaptest.NewLogger(t)); err == nil {
		t.Fatal("a malformed URL was accepted")
	}
}

// TestDatabaseDown stops PostgreSQL under two replicas: every call fails
// with ErrUnavailable, and once it is back everything works again without
// reopening, subscribers having been told to resync.
func TestDatabaseDown(t *testing.T) {
	srv := pgtest.Start(t, pgtest.Options{})
	dsn := srv.NewDatabase(t)
	migrate(t, dsn, pgcluster.SchemaVersion)
	a, b := open(t, dsn), open(t, dsn)
	ctx := context.Background()
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sub, err := b.Subscribe(sctx, "x")
	if err != nil {
		t.Fatal(err)
	}
	if err := a.SetPresent(ctx, "peer:1", true); err != nil {
		t.Fatal(err)
	}

	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	cctx, ccancel := context.WithTimeout(ctx, 15*time.Second)
	defer ccancel()
	calls := map[string]error{
		"publish":   a.Publish(cctx, "x", []byte("m")),
		"lead":      second(a.Lead(cctx, "job", time.Minute)),
		"present":   second(a.Present(cctx, "peer:1")),
		"heartbeat": second(a.Heartbeat(cctx, cluster.Replica{ID: a.Self()}, time.Minute)),
		"take":      second(a.TakeOnce(cctx, "t", time.Now())),
		"put":       a.PutOnce(cctx, "t", time.Now().Add(time.Minute)),
		"presence":  a.SetPresent(cctx, "peer:2", true),
	}
	for name, err := range calls {
		if !errors.Is(err, cluster.ErrUnavailable) {
			t.Errorf("%s with the database down: %v, want ErrUnavailable", name, err)
		}
	}

	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	if m := recvWithin(t, sub, 20*time.Second); m != nil {
		t.Fatalf("after the database came back got %q, want nil (resync)", m)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		_, err := a.Heartbeat(ctx, cluster.Replica{ID: a.Self()}, time.Minute)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("heartbeat never recovered: %v", err)
		}
		<-time.After(100 * time.Millisecond)
	}
	// The presence write that failed meanwhile is restored by the heartbeat.
	// b's first call may meet a pooled connection the restart closed (it
	// fails once, unavailable, and the pool drops it).
	var ids []string
	var perr error
	if testutil.Poll(10*time.Second, func() bool {
		ids, perr = b.Present(ctx, "peer:2")
		return perr == nil || !errors.Is(perr, cluster.ErrUnavailable)
	}) != nil {
		t.Fatalf("b's presence reads stay unavailable after the database came back: %v", perr)
	}
	if err := perr; err != nil || len(ids) != 1 || ids[0] != a.Self() {
		t.Fatalf("peer:2 present on %q (%v), want [a]: the failed write was not restored", ids, err)
	}
	if err := a.Publish(ctx, "x", []byte("again")); err != nil {
		t.Fatal(err)
	}
	if m := recvWithin(t, sub, 10*time.Second); string(m) != "again" {
		t.Fatalf("after recovery got %q, want \"again\"", m)
	}
}

// TestPresenceRestoredAfterForgotten: a replica forgotten by another's
// heartbeat (it was away longer than ttl) records its presence again on
// its next heartbeat, since it still serves those peers.
func TestPresenceRestoredAfterForgotten(t *testing.T) {
	srv := pgtest.Shared(t)
	dsn := srv.NewDatabase(t)
	migrate(t, dsn, pgcluster.SchemaVersion)
	a, b := open(t, dsn), open(t, dsn)
	ctx := context.Background()
	const ttl = 200 * time.Millisecond
	if _, err := a.Heartbeat(ctx, cluster.Replica{ID: a.Self()}, ttl); err != nil {
		t.Fatal(err)
	}
	if err := a.SetPresent(ctx, "peer:1", true); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		list, err := b.Heartbeat(ctx, cluster.Replica{ID: b.Self()}, ttl)
		if err != nil {
			t.Fatal(err)
		}
		if len(list) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("b never forgot a")
		}
		<-time.After(50 * time.Millisecond)
	}
	if ids, _ := b.Present(ctx, "peer:1"); len(ids) != 0 {
		t.Fatalf("peer:1 still present on %q", ids)
	}
	if _, err := a.Heartbeat(ctx, cluster.Replica{ID: a.Self()}, time.Minute); err != nil {
		t.Fatal(err)
	}
	if ids, err := b.Present(ctx, "peer:1"); err != nil || len(ids) != 1 || ids[0] != a.Self() {
		t.Fatalf("after a's heartbeat peer:1 present on %q (%v), want [a]", ids, err)
	}
}

func second[T any](_ T, err error) error { return err }

func recvWithin(t *testing.T, ch <-chan []byte, d time.Duration) []byte {
	t.Helper()
	select {
	case m, ok := <-ch:
		if !ok {
			t.Fatal("subscription closed")
		}
		return m
	case <-time.After(d):
		t.Fatalf("nothing within %v", d)
		return nil
	}
}

// TestPublishSkipsDiskWait: NOTIFYs commit without waiting for the WAL
// flush (a message is worthless after a database crash anyway).
func TestPublishSkipsDiskWait(t *testing.T) {
	srv := pgtest.Shared(t)
	dsn := srv.NewDatabase(t)
	migrate(t, dsn, pgcluster.SchemaVersion)
	c := open(t, dsn)
	if v, err := pgcluster.PublishSetting(c, "synchronous_commit"); err != nil || v != "off" {
		t.Fatalf("synchronous_commit on the publish connections = %q (%v), want off", v, err)
	}
}
