package agent

import (
	"context"
	"time"

	"go.uber.org/zap"

	controlv1 "meshd/api/control/v1"
	daemonv1 "meshd/api/daemon/v1"
)

// PathReportInterval is how often the agent tells control how it reaches
// each peer (control refuses reports much closer together).
var PathReportInterval = 30 * time.Second

// PathReporter is a Control that can report paths (the real client can;
// a Control without it reports nothing).
type PathReporter interface {
	ReportPaths(ctx context.Context, paths []*controlv1.PathReport) error
}

func (r *realControl) ReportPaths(ctx context.Context, paths []*controlv1.PathReport) error {
	return r.c.ReportPaths(ctx, paths)
}

// startPathReports reports the peers' paths to control every
// PathReportInterval until the returned stop is called.
func (t *tunnel) startPathReports(ctx context.Context) (stop func()) {
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(PathReportInterval)
		defer tick.Stop()
		for {
			select {
			case <-rctx.Done():
				return
			case <-tick.C:
			}
			t.mu.RLock()
			ctl := t.ctl
			t.mu.RUnlock()
			rep, ok := ctl.(PathReporter)
			if !ok {
				return
			}
			cctx, ccancel := context.WithTimeout(rctx, 10*time.Second)
			err := rep.ReportPaths(cctx, pathReports(t.e.Status().GetPeers()))
			ccancel()
			if err != nil && rctx.Err() == nil {
				t.log.Debug("path report not taken", zap.Error(err))
			}
		}
	}()
	return func() { cancel(); <-done }
}

// pathReports is the summary control keeps of what `meshd status` shows.
func pathReports(peers []*daemonv1.PeerStatus) []*controlv1.PathReport {
	out := make([]*controlv1.PathReport, 0, len(peers))
	for _, p := range peers {
		r := &controlv1.PathReport{PublicKey: p.GetPublicKey(), State: p.GetState(), Path: p.GetPath(),
			LocalKind: p.GetLocalCandidate().GetType(), RemoteKind: p.GetRemoteCandidate().GetType(),
			LatencyMs: p.GetLatencyMs(), Reason: p.GetReason()}
		if p.GetPath() == PathRelayed {
			// The relayed candidate's address is the relay's (its public
			// address and the allocation's port).
			r.Relay = p.GetLocalCandidate().GetAddress()
			if p.GetLocalCandidate().GetType() != "relay" {
				r.Relay = p.GetRemoteCandidate().GetAddress()
			}
		}
		out = append(out, r)
	}
	return out
}
