package control

import (
	"context"
	"fmt"
	"time"

	"go.uber.org/zap"

	"meshd/internal/netmap"
	"meshd/store"
)

// janitor removes ephemeral peers that stayed offline too long and ends the
// streams of peers whose login expired, every JanitorInterval. Every
// replica ends its own streams; what is written (a removal, an expiry in
// the audit log) is done by one replica of the network, the one holding
// the "janitor" lease.
func (s *Service) janitor(ctx context.Context) {
	t := time.NewTicker(s.opts.JanitorInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		lead := false
		if s.refused() == nil {
			var err error
			if lead, err = s.cl.Lead(ctx, "janitor", janitorLease*s.opts.JanitorInterval); err != nil {
				s.faultLog(s.log, err)("janitor lease", zap.Error(err))
			}
		}
		for _, a := range s.accountList() {
			a.sweep(ctx, lead)
		}
	}
}

// janitorLease is the janitor's lease in intervals: the holder renews it
// every interval, and a dead holder's passes on within a few.
const janitorLease = 3

func (a *account) sweep(ctx context.Context, lead bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	now := a.s.now()
	for _, p := range a.peers {
		online := a.isOnline(p.ID)
		switch {
		case p.Ephemeral && !online && now.Sub(p.LastSeen) > a.a.EphemeralOffline:
			if !lead {
				continue
			}
			// Offline on every replica, asked of the cluster itself.
			if elsewhere, err := a.s.presentElsewhere(ctx, p.ID); err != nil || elsewhere {
				continue
			}
			why := fmt.Sprintf("ephemeral peer offline since %s", p.LastSeen.UTC().Format(time.RFC3339))
			if err := a.removePeerLocked(ctx, "system", p, why); err != nil {
				a.log.Warn("remove ephemeral peer", zap.String("peer", p.Name), zap.Error(err))
			} else {
				a.log.Info("removed ephemeral peer", zap.String("peer", p.Name))
			}
		case a.loginExpired(p, now):
			_, noted := a.expired[p.ID]
			if lead {
				a.noteExpiry(ctx, p, now)
			} else {
				a.expired[p.ID] = a.loginExpires(p, now) // the lead records it
			}
			a.noteSSOExpiry(p, noted)
			if online {
				a.dist.kick(p.ID, a.loginExpiredErr(p))
			}
		default:
			delete(a.expired, p.ID)
		}
	}
}

// noteExpiry records a peer's login expiry in the audit log, once per
// expiry: not again when the setting changes while the peer stays expired,
// again after it logged in or stopped being expired. Callers hold mu.
func (a *account) noteExpiry(ctx context.Context, p *store.Peer, now time.Time) {
	if _, noted := a.expired[p.ID]; noted {
		return
	}
	err := a.commit(ctx, audit{actor: "system", action: "peer.login_expired", targetType: "peer", targetID: p.ID,
		targetName: p.Name, detail: fmt.Sprintf("last login %s, login expiration %s",
			p.LastLogin.UTC().Format(time.RFC3339), a.a.LoginExpiration)}, nil, nil, netmap.Change{})
	if err != nil {
		a.log.Warn("record login expiry", zap.String("peer", p.Name), zap.Error(err))
		return
	}
	a.expired[p.ID] = a.loginExpires(p, now)
	a.log.Info("login expired", zap.String("peer", p.Name), zap.Time("last_login", p.LastLogin))
}
