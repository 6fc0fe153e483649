package control

import (
	"context"
	"slices"
	"strings"
	"time"

	"go.uber.org/zap"

	"meshd/internal/netmap"
)

// A peer is online while it has a stream on some replica. Each replica
// counts its own streams (account.online), records in the cluster that it
// holds the peer ("peer:ID"), and publishes when a peer's first stream
// opens or its last one closes; the others then ask the cluster whether
// the peer is still present anywhere (account.remote).

const presencePrefix = "peer:"

// presenceTimeout bounds a presence update; a missed one is repaired by
// the next resync.
const presenceTimeout = 5 * time.Second

// setPresent records in the cluster whether this replica holds a stream of
// peer id, and tells the other replicas. seen is when an offline peer was
// last seen. Callers hold a.mu, so that updates of one peer stay in order.
func (a *account) setPresent(id string, present bool, seen time.Time) {
	s := a.s
	// Also while control stops: the others should not wait for this
	// replica's heartbeats to expire to see its peers go.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(s.ctx), presenceTimeout)
	defer cancel()
	if err := s.cl.SetPresent(ctx, presencePrefix+id, present); err != nil {
		s.faultLog(a.log, err)("record presence", zap.String("peer", id), zap.Bool("present", present), zap.Error(err))
	}
	m := busMsg{Account: a.id, Kind: kindPresence, Change: netmap.Change{Entries: []string{id}}}
	if !present {
		m.Seen = map[string]int64{id: seen.UnixNano()}
	}
	s.publish(m)
}

// presentElsewhere reports whether another replica holds a stream of peer
// id.
func (s *Service) presentElsewhere(ctx context.Context, id string) (bool, error) {
	ids, err := s.cl.Present(ctx, presencePrefix+id)
	if err != nil {
		s.fault(err)
		return false, err
	}
	return slices.ContainsFunc(ids, func(r string) bool { return r != s.cl.Self() }), nil
}

// applyPresence follows a peer's streams opening or closing on another
// replica.
func (s *Service) applyPresence(ctx context.Context, m busMsg) {
	a := s.account(m.Account)
	if a == nil {
		return
	}
	for _, id := range m.Change.Entries {
		remote, err := s.presentElsewhere(ctx, id)
		if err != nil {
			s.faultLog(a.log, err)("presence of a peer", zap.String("peer", id), zap.Error(err))
			continue
		}
		a.mu.Lock()
		p := a.peers[id]
		changed := false
		if seen, ok := m.Seen[id]; ok && p != nil && seen > p.LastSeen.UnixNano() {
			np := *p
			np.LastSeen = time.Unix(0, seen)
			a.putPeer(&np)
			changed = true
		}
		if p != nil && a.remote[id] != remote {
			if remote {
				a.remote[id] = true
			} else {
				delete(a.remote, id)
			}
			changed = true
		}
		if changed {
			a.change(netmap.Change{Entries: []string{id}})
		}
		a.mu.Unlock()
	}
}

// resyncPresence asks the cluster which peers other replicas hold: at the
// start, after lost messages, when the list of replicas changed (the peers
// of a dead replica go offline) and when the database is back (this
// replica's own records may have been dropped meanwhile: they are made
// again).
func (s *Service) resyncPresence(ctx context.Context) {
	keys, err := s.cl.PresentWithPrefix(ctx, presencePrefix)
	if err != nil {
		s.faultLog(s.log, err)("resync presence", zap.Error(err))
		return
	}
	present := make(map[string]bool, len(keys))
	for _, k := range keys {
		present[strings.TrimPrefix(k, presencePrefix)] = true
	}
	now := s.now()
	for _, a := range s.accountList() {
		a.mu.Lock()
		var changed []string
		for id, p := range a.peers {
			local := a.online[id] > 0
			if local && !present[id] {
				if err := s.cl.SetPresent(ctx, presencePrefix+id, true); err != nil {
					s.fault(err)
				}
			}
			remote := present[id] && !local
			if a.remote[id] == remote {
				continue
			}
			if remote {
				a.remote[id] = true
			} else {
				delete(a.remote, id)
				if !local { // its replica died: it was there until now
					np := *p
					np.LastSeen = now
					a.putPeer(&np)
				}
			}
			changed = append(changed, id)
		}
		if len(changed) > 0 {
			a.change(netmap.Change{Entries: changed})
		}
		a.mu.Unlock()
	}
}
