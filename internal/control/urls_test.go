package control_test

import (
	"context"
	"slices"
	"testing"

	"connectrpc.com/connect"

	adminv1 "meshd/api/admin/v1"
	"meshd/internal/control/controltest"
	"meshd/internal/jointoken"
)

// Join tokens name every live replica, the one that made them first, so
// that a machine can join while the replica that printed its token is down.
func TestJoinTokensNameEveryReplica(t *testing.T) {
	r := controltest.NewReplicas(t, 2)
	a := r[0].AddAgent(controltest.AgentOptions{Hostname: "a"})
	a.WaitFor(t, "both control URLs", func(m *controltest.Map) bool { return len(m.ControlUrls) == 2 })
	for i, h := range r {
		want := []string{h.URL, r[1-i].URL}
		k, err := h.Admin.CreateSetupKey(context.Background(), connect.NewRequest(&adminv1.CreateSetupKeyRequest{Name: "more"}))
		if err != nil {
			t.Fatal(err)
		}
		tok, err := jointoken.Decode(k.Msg.JoinToken)
		if err != nil || !slices.Equal(tok.URLs(), want) || tok.ControlURL != h.URL || tok.SetupKey != k.Msg.Key {
			t.Fatalf("setup key token through replica %d: %+v (%v), want URLs %v", i, tok, err, want)
		}
	}
}
