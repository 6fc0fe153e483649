package control

import (
	"context"
	"slices"
	"strings"
	"time"

	"go.uber.org/zap"
	"google.golang.org/protobuf/types/known/timestamppb"

	adminv1 "meshd/api/admin/v1"
	"meshd/internal/cluster"
	"meshd/internal/netmap"
	"meshd/internal/version"
)

// replicaView is what this replica knows of the live replicas: what goes
// into maps (every control URL, this one first, and the union of their
// relays) and into the server status.
type replicaView struct {
	replicas []cluster.Replica // oldest first
	controls []string
	stun     []string
	turn     []string
}

// self is this replica as it announces itself.
func (s *Service) self() cluster.Replica {
	return cluster.Replica{ID: s.cl.Self(), PublicURL: s.opts.PublicURL, SignalURL: s.opts.SignalURL,
		RelayURLs: s.opts.Relays.URLs, Version: version.String(), Started: s.started}
}

// heartbeats says every ReplicaHeartbeat that this replica is alive and
// learns which others are.
func (s *Service) heartbeats(ctx context.Context) {
	t := time.NewTicker(s.opts.ReplicaHeartbeat)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s.heartbeat(ctx)
	}
}

// heartbeat records this replica as alive and takes the list of live
// replicas. When the list changed, every map is sent again (control URLs,
// relays), and peers of replicas that died go offline.
func (s *Service) heartbeat(ctx context.Context) {
	rs, err := s.cl.Heartbeat(ctx, s.self(), s.opts.ReplicaTTL)
	if err != nil {
		logf := s.faultLog(s.log, err)
		if s.view.Load() == nil {
			s.view.Store(s.makeView([]cluster.Replica{s.self()}))
		}
		logf("replica heartbeat", zap.Error(err))
		return
	}
	v := s.makeView(rs)
	old := s.view.Swap(v)
	if old == nil || sameReplicas(old.replicas, v.replicas) {
		return
	}
	s.log.Info("replicas changed", zap.Int("replicas", len(v.replicas)), zap.Strings("control_urls", v.controls))
	s.resyncPresence(ctx)
	for _, a := range s.accountList() {
		a.mu.Lock()
		a.change(netmap.Change{All: true})
		a.mu.Unlock()
	}
}

// sameReplicas compares what maps and presence depend on.
func sameReplicas(a, b []cluster.Replica) bool {
	return slices.EqualFunc(a, b, func(x, y cluster.Replica) bool {
		return x.ID == y.ID && x.PublicURL == y.PublicURL && x.SignalURL == y.SignalURL && slices.Equal(x.RelayURLs, y.RelayURLs)
	})
}

func (s *Service) makeView(rs []cluster.Replica) *replicaView {
	v := &replicaView{replicas: rs}
	seen := map[string]bool{}
	add := func(list *[]string, u string) {
		if u != "" && !seen[u] {
			seen[u] = true
			*list = append(*list, u)
		}
	}
	add(&v.controls, s.opts.PublicURL)
	for _, r := range rs {
		add(&v.controls, strings.TrimRight(r.PublicURL, "/"))
	}
	// This replica's relays first: they are the ones it was told about.
	relays := slices.Clone(s.opts.Relays.URLs)
	for _, r := range rs {
		if r.ID != s.cl.Self() {
			relays = append(relays, r.RelayURLs...)
		}
	}
	for _, u := range relays {
		switch scheme, _, _ := strings.Cut(u, ":"); scheme {
		case "stun", "stuns":
			add(&v.stun, u)
		case "turn", "turns":
			add(&v.turn, u)
		}
	}
	return v
}

// replicaStatus fills the replicas and the store's state into a server
// status.
func (s *Service) replicaStatus(st *adminv1.ServerStatus) {
	st.ReplicaId = s.cl.Self()
	st.StoreAvailable = true
	if d := s.down.Load(); d != nil {
		st.StoreAvailable, st.StoreError, st.StoreDownSince = false, d.reason, timestamppb.New(d.since)
	}
	if v := s.view.Load(); v != nil {
		for _, r := range v.replicas {
			st.Replicas = append(st.Replicas, &adminv1.Replica{Id: r.ID, PublicUrl: r.PublicURL, SignalUrl: r.SignalURL,
				RelayUrls: r.RelayURLs, Version: r.Version, Started: ts(r.Started), LastSeen: ts(r.Seen)})
		}
	}
}

// controlURLs are the control URLs in maps: this replica's first, then the
// other live replicas'.
func (s *Service) controlURLs() []string {
	if v := s.view.Load(); v != nil {
		return v.controls
	}
	if s.opts.PublicURL == "" {
		return nil
	}
	return []string{s.opts.PublicURL}
}
