package signal

import (
	"context"
	"fmt"
	"time"

	"go.uber.org/zap"

	"meshd/internal/signal"
)

// DefaultHeartbeat is how often a standalone `meshd signal` in a cluster
// records itself as alive; the cluster forgets it, and the keys registered
// at it, after MissedHeartbeats intervals without one.
const DefaultHeartbeat = 5 * time.Second

// MissedHeartbeats is the cluster's ttl in heartbeat intervals.
const MissedHeartbeats = 3

// heartbeatTimeout bounds one heartbeat, and the first one at Start.
const heartbeatTimeout = 10 * time.Second

// startHeartbeats records this replica as alive in cfg.Cluster once, then
// every cfg.Heartbeat until ctx ends. A replica the other replicas do not
// see is not live, and neither is the presence of the keys registered at
// it: the first heartbeat comes before signal serves, and its error stops
// Start. When heartbeats succeed again after failing, the cluster may have
// forgotten this replica with its presence: signal records it again.
func startHeartbeats(ctx context.Context, cfg Config, sig *signal.Server, log *zap.Logger) error {
	r := cfg.Replica
	r.ID = cfg.Cluster.Self()
	if r.Started.IsZero() {
		r.Started = time.Now()
	}
	ttl := MissedHeartbeats * cfg.Heartbeat
	beat := func() error {
		hctx, cancel := context.WithTimeout(ctx, heartbeatTimeout)
		defer cancel()
		_, err := cfg.Cluster.Heartbeat(hctx, r, ttl)
		return err
	}
	if err := beat(); err != nil {
		return fmt.Errorf("signal: cluster heartbeat: %w", err)
	}
	go func() {
		t := time.NewTicker(cfg.Heartbeat)
		defer t.Stop()
		failing := false
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			if ctx.Err() != nil {
				return
			}
			switch err := beat(); {
			case err != nil && ctx.Err() == nil:
				if !failing {
					log.Warn("cluster heartbeat failed: other signal instances forget this one after the ttl", zap.Duration("ttl", ttl), zap.Error(err))
				}
				failing = true
			case err == nil && failing:
				log.Info("cluster heartbeat works again; recording the registered keys again")
				sig.RestorePresence()
				failing = false
			}
		}
	}()
	return nil
}
