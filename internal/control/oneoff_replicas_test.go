package control_test

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"connectrpc.com/connect"

	adminv1 "meshd/api/admin/v1"
	"meshd/internal/control/controltest"
)

// A one-off setup key joins one machine, whichever replicas the machines
// race through: the use is counted in the database, not only in the
// memory of the replica that took it (which another replica's use has not
// reached yet).
func TestOneOffKeyRacedOnTwoReplicas(t *testing.T) {
	r := controltest.NewReplicas(t, 2)
	ctx := context.Background()
	// Each replica hands out addresses from its own cursor: three joins
	// through the first and the first one deleted leave the replicas
	// picking different addresses, so no address conflict stops the race.
	for i := range 3 {
		r[0].AddAgent(controltest.AgentOptions{Hostname: fmt.Sprintf("old%d", i), NoSync: true})
	}
	if _, err := r[0].Admin.DeletePeer(ctx, connect.NewRequest(&adminv1.DeletePeerRequest{Id: "old0"})); err != nil {
		t.Fatal(err)
	}
	for round := range 4 {
		res, err := r[0].Admin.CreateSetupKey(ctx, connect.NewRequest(&adminv1.CreateSetupKeyRequest{
			Name: fmt.Sprintf("once%d", round), OneOff: true}))
		if err != nil {
			t.Fatal(err)
		}
		key := res.Msg.Key
		agents := []*controltest.Agent{
			r[0].NewAgent(controltest.AgentOptions{Hostname: fmt.Sprintf("a%d", round)}),
			r[1].NewAgent(controltest.AgentOptions{Hostname: fmt.Sprintf("b%d", round)}),
		}
		// Both replicas know the key before the race.
		for _, h := range r {
			waitAdmin(t, "the key on every replica", func() bool {
				_, err := h.Admin.GetSetupKey(ctx, connect.NewRequest(&adminv1.GetSetupKeyRequest{Id: fmt.Sprintf("once%d", round)}))
				return err == nil
			})
		}
		errs := make([]error, 2)
		var wg sync.WaitGroup
		for i, a := range agents {
			wg.Go(func() { errs[i] = a.LoginWith(key) })
		}
		wg.Wait()
		if errs[0] == nil && errs[1] == nil {
			t.Fatalf("round %d: a one-off key joined two machines, one through each replica", round)
		}
		if errs[0] != nil && errs[1] != nil {
			t.Fatalf("round %d: a one-off key joined no machine: %v; %v", round, errs[0], errs[1])
		}
	}
}
