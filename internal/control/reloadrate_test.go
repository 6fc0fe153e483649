package control_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"connectrpc.com/connect"

	adminv1 "meshd/api/admin/v1"
	"meshd/internal/control/controltest"
)

// Each change made through one replica makes the others load the whole
// account again. A stream of small changes (a peer logging in over and
// over, an admin script) must not make every other replica load the
// account once per change: reloads of one account are spaced, the changes
// meanwhile merged into the next, and the last change still arrives.
func TestReplicaReloadsAreSpaced(t *testing.T) {
	r := controltest.NewReplicas(t, 2)
	ctx := context.Background()
	const n = 150
	before := r[1].Faults.Loads()
	start := time.Now()
	for i := range n {
		if _, err := r[0].Admin.CreateGroup(ctx, connect.NewRequest(&adminv1.CreateGroupRequest{Name: fmt.Sprintf("g%d", i)})); err != nil {
			t.Fatal(err)
		}
	}
	took := time.Since(start)
	last := fmt.Sprintf("g%d", n-1)
	deadline := time.Now().Add(5 * time.Second)
	for {
		res, err := r[1].Admin.GetGroup(ctx, connect.NewRequest(&adminv1.GetGroupRequest{Id: last}))
		if err == nil && res.Msg.Name == last {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the last of %d changes did not reach the other replica: %v", n, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	loads := r[1].Faults.Loads() - before
	// One reload per 100 ms at most, and a few more for the heartbeats.
	if max := int(took/(100*time.Millisecond)) + 5; loads > max {
		t.Fatalf("%d changes in %v made the other replica load the account %d times, want at most %d", n, took.Round(time.Millisecond), loads, max)
	}
	t.Logf("%d changes in %v: %d loads on the other replica", n, took.Round(time.Millisecond), loads)
}
