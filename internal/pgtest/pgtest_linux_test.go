package pgtest_test

import (
	"context"
	"os/exec"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"meshd/internal/netnstest"
	"meshd/internal/pgtest"
)

// TestNetns runs the server inside a namespace: reachable over TCP there,
// not from the root namespace, and NewDatabase still works (unix socket).
func TestNetns(t *testing.T) {
	ns, do := netnstest.New(t, "pgtest")
	if out, err := exec.Command("ip", "-n", ns, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		t.Fatalf("lo up: %v: %s", err, out)
	}
	s := pgtest.Start(t, pgtest.Options{Netns: ns})
	dsn := s.NewDatabase(t)
	var inside error
	do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c, err := pgx.Connect(ctx, dsn)
		if err == nil {
			_, err = c.Exec(ctx, "SELECT 1")
			c.Close(ctx)
		}
		inside = err
	})
	if inside != nil {
		t.Fatalf("connect inside the namespace: %v", inside)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if c, err := pgx.Connect(ctx, dsn); err == nil {
		c.Close(ctx)
		t.Fatal("reached from the root namespace: the server is not in the namespace")
	}
}
