package cluster_test

import (
	"context"
	"strconv"
	"time"

	"testing"

	"meshd/internal/cluster"
	"meshd/internal/cluster/clustertest"
)

func TestGroupConformance(t *testing.T) {
	clustertest.Run(t, func(t *testing.T) clustertest.Pair {
		g := cluster.NewGroup(nil)
		a, b := g.Join(), g.Join()
		t.Cleanup(func() { a.Close(); b.Close() })
		return clustertest.Pair{A: a, B: b}
	})
}

// Challenges are one-time tokens issued to anyone who asks, unauthenticated:
// storing one must not cost a walk over all those waiting, or a stream of
// requests makes each new one slower (quadratic in the tokens alive).
func TestLocalPutOnceCostDoesNotGrowWithTokens(t *testing.T) {
	const n = 200_000
	c := cluster.Local()
	defer c.Close()
	ctx := context.Background()
	exp := time.Now().Add(time.Hour)
	start := time.Now()
	for i := range n {
		if err := c.PutOnce(ctx, "challenge:"+strconv.Itoa(i), exp); err != nil {
			t.Fatal(err)
		}
		if time.Since(start) > 20*time.Second {
			t.Fatalf("%d tokens stored in 20 s: each PutOnce walks all the tokens", i)
		}
	}
	if ok, err := c.TakeOnce(ctx, "challenge:7", time.Now()); !ok || err != nil {
		t.Fatalf("TakeOnce of a stored token: %v %v", ok, err)
	}
}

// Expired tokens are still dropped, so the table does not grow forever.
func TestLocalOnceForgetsExpired(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	g := cluster.NewGroup(func() time.Time { return now })
	c := g.Join()
	defer c.Close()
	ctx := context.Background()
	for i := range 100 {
		_ = c.PutOnce(ctx, "old:"+strconv.Itoa(i), now.Add(time.Minute))
	}
	now = now.Add(2 * time.Minute)
	_ = c.PutOnce(ctx, "new", now.Add(time.Minute))
	if n := cluster.OnceLen(g); n != 1 {
		t.Fatalf("%d one-time tokens kept, want 1 (the expired ones dropped)", n)
	}
}
