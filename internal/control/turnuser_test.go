package control_test

import (
	"context"
	"testing"

	"connectrpc.com/connect"

	adminv1 "meshd/api/admin/v1"
	"meshd/internal/control/controltest"
)

// TestTURNUserValid: a relay in control's process learns at once that a
// deleted peer's TURN credential is no longer good.
func TestTURNUserValid(t *testing.T) {
	h := controltest.NewHarness(t, 0)
	ctx := context.Background()
	agents(t, h, "a")
	peers := must[adminv1.ListPeersResponse](t)(h.Admin.ListPeers(ctx, connect.NewRequest(&adminv1.ListPeersRequest{})))
	if len(peers.Peers) != 1 {
		t.Fatalf("%d peers", len(peers.Peers))
	}
	id := peers.Peers[0].Id
	if !h.Service.TURNUserValid(id) {
		t.Fatalf("peer %s not valid for TURN", id)
	}
	if h.Service.TURNUserValid("no-such-peer") {
		t.Fatal("an unknown id is valid for TURN")
	}
	must[adminv1.DeletePeerResponse](t)(h.Admin.DeletePeer(ctx, connect.NewRequest(&adminv1.DeletePeerRequest{Id: id})))
	if h.Service.TURNUserValid(id) {
		t.Fatal("a deleted peer is still valid for TURN")
	}
}
