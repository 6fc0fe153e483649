package control_test

import (
	"context"
	"strings"
	"testing"

	"connectrpc.com/connect"

	adminv1 "meshd/api/admin/v1"
	"meshd/internal/control/controltest"
)

// The account's post-quantum mode reaches every map, and each peer's
// support (from its agent) reaches its neighbours; a bad mode is refused.
func TestPostQuantumMode(t *testing.T) {
	ctx := context.Background()
	h := controltest.NewHarness(t, 0)
	pq := h.AddAgent(controltest.AgentOptions{Hostname: "pq", PostQuantum: true})
	old := h.AddAgent(controltest.AgentOptions{Hostname: "old"})
	old.WaitFor(t, "pq's support, mode off", func(m *controltest.Map) bool {
		return len(m.Peers) == 1 && m.Peers[0].PostQuantum && m.PostQuantum == ""
	})
	pq.WaitFor(t, "old without support", func(m *controltest.Map) bool {
		return len(m.Peers) == 1 && !m.Peers[0].PostQuantum
	})
	acct := must[adminv1.Account](t)(h.Admin.GetAccount(ctx, connect.NewRequest(&adminv1.GetAccountRequest{})))
	if acct.PostQuantum != "off" {
		t.Fatalf("default mode %q, want off", acct.PostQuantum)
	}

	mode := "Strict"
	acct = must[adminv1.Account](t)(h.Admin.UpdateAccount(ctx, connect.NewRequest(&adminv1.UpdateAccountRequest{PostQuantum: &mode})))
	if acct.PostQuantum != "strict" {
		t.Fatalf("mode %q after update", acct.PostQuantum)
	}
	for _, a := range []*controltest.Agent{pq, old} {
		a.WaitFor(t, "strict in the map", func(m *controltest.Map) bool { return m.PostQuantum == "strict" })
	}

	bad := "maybe"
	_, err := h.Admin.UpdateAccount(ctx, connect.NewRequest(&adminv1.UpdateAccountRequest{PostQuantum: &bad}))
	if connect.CodeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), "off, permissive, strict") {
		t.Fatalf("bad mode: %v", err)
	}
}
