package control

import (
	"context"
	"fmt"
	"time"

	"go.uber.org/zap"
)

// janitor removes ephemeral peers that stayed offline too long and ends the
// streams of peers whose login expired, every JanitorInterval.
func (s *Service) janitor(ctx context.Context) {
	t := time.NewTicker(s.opts.JanitorInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for _, a := range s.accountList() {
			a.sweep(ctx)
		}
	}
}

func (a *account) sweep(ctx context.Context) {
	a.mu.Lock()
	defer a.mu.Unlock()
	now := a.s.now()
	for _, p := range a.peers {
		online := a.online[p.ID] > 0
		switch {
		case p.Ephemeral && !online && now.Sub(p.LastSeen) > a.a.EphemeralOffline:
			why := fmt.Sprintf("ephemeral peer offline since %s", p.LastSeen.UTC().Format(time.RFC3339))
			if err := a.removePeerLocked(ctx, "system", p, why); err != nil {
				a.log.Warn("remove ephemeral peer", zap.String("peer", p.Name), zap.Error(err))
			} else {
				a.log.Info("removed ephemeral peer", zap.String("peer", p.Name))
			}
		case online && a.loginExpired(p, now):
			a.dist.kick(p.ID, refuseLoginExpired.err(""))
		}
	}
}
