package control_test

import (
	"context"
	"testing"
	"time"

	"connectrpc.com/connect"

	adminv1 "meshd/api/admin/v1"
	controlv1 "meshd/api/control/v1"
	"meshd/internal/control"
	"meshd/internal/control/controltest"
)

// An agent's path report shows in the admin API's peer, naming the other
// peer; a report sooner than MinPathReport is refused; text an agent sent
// is cleaned.
func TestReportPathsShownToAdmins(t *testing.T) {
	h := controltest.NewHarness(t, 2)
	a, b := h.Agents[0], h.Agents[1]
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := a.Client.ReportPaths(ctx, []*controlv1.PathReport{
		{PublicKey: b.Key.Public().String(), State: "connected", Path: "relayed", LocalKind: "relay", RemoteKind: "srflx",
			Relay: "198.51.100.1:49152", LatencyMs: 12.5, Reason: "UDP blocked\x1b[31m"},
		{PublicKey: "unknown-key", State: "idle"},
	})
	if err != nil {
		t.Fatal(err)
	}
	peer, err := h.Admin.GetPeer(ctx, connect.NewRequest(&adminv1.GetPeerRequest{Id: a.Name}))
	if err != nil {
		t.Fatal(err)
	}
	paths := peer.Msg.Paths
	if len(paths) != 1 {
		t.Fatalf("paths = %v, want the one to %s", paths, b.Name)
	}
	p := paths[0]
	if p.Peer != b.Name || p.Path != "relayed" || p.Relay != "198.51.100.1:49152" || p.LatencyMs != 12.5 || p.LocalKind != "relay" {
		t.Errorf("path = %v", p)
	}
	if p.Reason != "UDP blocked[31m" && p.Reason != "UDP blocked\ufffd[31m" {
		t.Errorf("reason %q: control characters must be cleaned", p.Reason)
	}
	if p.Reported == nil {
		t.Error("no report time")
	}
	other, err := h.Admin.GetPeer(ctx, connect.NewRequest(&adminv1.GetPeerRequest{Id: b.Name}))
	if err != nil {
		t.Fatal(err)
	}
	if len(other.Msg.Paths) != 0 {
		t.Errorf("%s reported nothing, got %v", b.Name, other.Msg.Paths)
	}
	err = a.Client.ReportPaths(ctx, nil)
	if connect.CodeOf(err) != connect.CodeResourceExhausted {
		t.Fatalf("a second report at once: %v, want resource exhausted", err)
	}
	h.Clock.Advance(control.MinPathReport)
	if err := a.Client.ReportPaths(ctx, nil); err != nil {
		t.Fatalf("a report after %s: %v", control.MinPathReport, err)
	}
}
