package agent

import (
	"context"
	"testing"
	"time"

	controlv1 "meshd/api/control/v1"
	daemonv1 "meshd/api/daemon/v1"
	"meshd/internal/testutil"
	"meshd/wg/wgtest"
)

// The report names the candidate kinds of a direct path and the relay of a
// relayed one (the relay candidate's address, on whichever side it is).
func TestPathReports(t *testing.T) {
	got := pathReports([]*daemonv1.PeerStatus{
		{PublicKey: "A", State: PeerConnected, Path: PathDirect, LatencyMs: 0.4,
			LocalCandidate:  &daemonv1.Candidate{Type: "host", Address: "192.168.1.2:51820"},
			RemoteCandidate: &daemonv1.Candidate{Type: "srflx", Address: "203.0.113.9:4000"}},
		{PublicKey: "B", State: PeerConnected, Path: PathRelayed, Reason: "symmetric NAT",
			LocalCandidate:  &daemonv1.Candidate{Type: "relay", Address: "198.51.100.1:50000"},
			RemoteCandidate: &daemonv1.Candidate{Type: "srflx", Address: "203.0.113.7:1"}},
		{PublicKey: "C", State: PeerConnected, Path: PathRelayed,
			LocalCandidate:  &daemonv1.Candidate{Type: "host", Address: "10.0.0.2:51820"},
			RemoteCandidate: &daemonv1.Candidate{Type: "relay", Address: "198.51.100.2:50001"}},
		{PublicKey: "D", State: PeerConnecting},
	})
	if len(got) != 4 {
		t.Fatalf("%d reports, want 4", len(got))
	}
	if r := got[0]; r.LocalKind != "host" || r.RemoteKind != "srflx" || r.Relay != "" || r.LatencyMs != 0.4 {
		t.Errorf("direct: %v", r)
	}
	if r := got[1]; r.Relay != "198.51.100.1:50000" || r.Reason != "symmetric NAT" {
		t.Errorf("relayed here: %v", r)
	}
	if r := got[2]; r.Relay != "198.51.100.2:50001" {
		t.Errorf("relayed there: %v", r)
	}
	if r := got[3]; r.State != PeerConnecting || r.Path != "" || r.LocalKind != "" {
		t.Errorf("connecting: %v", r)
	}
}

// reportingControl is a fake control that records path reports.
type reportingControl struct {
	Control
	got chan []*controlv1.PathReport
}

func (r *reportingControl) ReportPaths(_ context.Context, p []*controlv1.PathReport) error {
	select {
	case r.got <- p:
	default:
	}
	return nil
}

// A running agent reports, every PathReportInterval, the path to each peer
// as its status shows it.
func TestEngineReportsPaths(t *testing.T) {
	old := PathReportInterval
	PathReportInterval = 50 * time.Millisecond
	t.Cleanup(func() { PathReportInterval = old })
	h := newHarness(t)
	got := make(chan []*controlv1.PathReport, 16)
	h.wrap = func(c Control) Control { return &reportingControl{Control: c, got: got} }
	a := h.start("", "SETUP", false)
	b := h.start("", "SETUP", false)
	testutil.WaitFor(t, 10*time.Second, "direct paths", func() bool { return a.pathTo(b.key()) == wgtest.PathDirect })
	a.dev().Handshake(b.key(), time.Now())
	deadline := time.After(10 * time.Second)
	for {
		select {
		case rs := <-got:
			for _, r := range rs {
				if r.PublicKey == b.key().String() && r.State == PeerConnected && r.Path == PathDirect && r.LocalKind == "host" {
					return
				}
			}
		case <-deadline:
			t.Fatal("no report of the direct path to b")
		}
	}
}
