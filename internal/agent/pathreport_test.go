package agent

import (
	"testing"

	daemonv1 "meshd/api/daemon/v1"
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
