package control

// Path reports: each agent tells control, at most every MinPathReport, how
// it reaches each other peer (direct with which candidate kinds, or through
// which relay, and the latency), so that an admin sees it next to the peer.
// Reports live in memory only: they describe the moment, a restart loses
// nothing an agent does not send again within half a minute.

import (
	"context"
	"errors"
	"sync"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	adminv1 "meshd/api/admin/v1"
	controlv1 "meshd/api/control/v1"
	"meshd/internal/seal"
	"meshd/store"
)

// MinPathReport is the least time between two path reports of one peer;
// control refuses reports that come sooner.
const MinPathReport = 20 * time.Second

// Bounds of one report: a map never lists more peers than the account has,
// and an entry's text is short.
const (
	maxPathReports   = 10_000
	maxPathFieldLen  = 64
	maxPathReasonLen = 512
	pathReportMaxAge = 10 * time.Minute // then it is no longer shown
)

type pathReport struct {
	at    time.Time
	paths []*controlv1.PathReport
}

// pathStore holds the latest report of each peer (by peer id).
type pathStore struct {
	mu        sync.Mutex
	byPeer    map[string]pathReport
	lastSweep time.Time
}

func (ps *pathStore) put(peerID string, r pathReport) error {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if ps.byPeer == nil {
		ps.byPeer = map[string]pathReport{}
	}
	if old, ok := ps.byPeer[peerID]; ok && r.at.Sub(old.at) < MinPathReport {
		return connect.NewError(connect.CodeResourceExhausted,
			errors.New("path report too soon: report at most every 30 seconds"))
	}
	ps.byPeer[peerID] = r
	if r.at.Sub(ps.lastSweep) > time.Minute {
		ps.lastSweep = r.at
		for id, o := range ps.byPeer {
			if r.at.Sub(o.at) > pathReportMaxAge {
				delete(ps.byPeer, id)
			}
		}
	}
	return nil
}

func (ps *pathStore) get(peerID string, now time.Time) (pathReport, bool) {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	r, ok := ps.byPeer[peerID]
	if !ok || now.Sub(r.at) > pathReportMaxAge {
		return pathReport{}, false
	}
	return r, true
}

// ReportPaths records a peer's path summary.
func (p *peerAPI) ReportPaths(ctx context.Context, req *connect.Request[controlv1.ReportPathsRequest]) (*connect.Response[controlv1.ReportPathsResponse], error) {
	s := p.s
	pub, err := s.verify(ctx, req.Msg.Proof, seal.PurposePaths)
	if err != nil {
		return nil, err
	}
	_, peer := s.peerByKey(pub.String())
	if peer == nil {
		return nil, refusePeerUnknown.err("")
	}
	in := req.Msg.Paths
	if len(in) > maxPathReports {
		in = in[:maxPathReports]
	}
	clean := make([]*controlv1.PathReport, 0, len(in))
	for _, r := range in {
		clean = append(clean, &controlv1.PathReport{
			PublicKey:  short(r.PublicKey, maxPathFieldLen),
			State:      short(r.State, maxPathFieldLen),
			Path:       short(r.Path, maxPathFieldLen),
			LocalKind:  short(r.LocalKind, maxPathFieldLen),
			RemoteKind: short(r.RemoteKind, maxPathFieldLen),
			Relay:      short(r.Relay, maxPathFieldLen),
			LatencyMs:  max(0, min(r.LatencyMs, 1e6)),
			Reason:     short(r.Reason, maxPathReasonLen),
		})
	}
	if err := s.paths.put(peer.ID, pathReport{at: s.now(), paths: clean}); err != nil {
		return nil, err
	}
	return connect.NewResponse(&controlv1.ReportPathsResponse{}), nil
}

// short bounds and cleans text an agent sent.
func short(s string, n int) string {
	if len(s) > n {
		s = s[:n]
	}
	return cleanAgentText(s)
}

// pathsOf returns the paths p's agent reported, naming the other peers.
// Callers hold a.mu.
func (a *account) pathsOf(p *store.Peer, now time.Time) []*adminv1.PeerPath {
	r, ok := a.s.paths.get(p.ID, now)
	if !ok {
		return nil
	}
	out := make([]*adminv1.PeerPath, 0, len(r.paths))
	for _, x := range r.paths {
		other := a.byKey[x.PublicKey]
		if other == nil {
			continue // deleted since, or not of this account
		}
		out = append(out, &adminv1.PeerPath{Peer: other.Name, State: x.State, Path: x.Path,
			LocalKind: x.LocalKind, RemoteKind: x.RemoteKind, Relay: x.Relay, LatencyMs: x.LatencyMs,
			Reason: x.Reason, Reported: timestamppb.New(r.at)})
	}
	return out
}
