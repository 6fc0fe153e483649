package control

import (
	"context"
	"fmt"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"meshd/internal/cluster"
)

// lostCluster is a cluster whose database is gone.
type lostCluster struct{ cluster.Cluster }

func (lostCluster) Heartbeat(context.Context, cluster.Replica, time.Duration) ([]cluster.Replica, error) {
	return nil, fmt.Errorf("pgcluster: heartbeat: %w: connection refused", cluster.ErrUnavailable)
}

func (lostCluster) PutOnce(context.Context, string, time.Time) error {
	return fmt.Errorf("pgcluster: put one-time token: %w: connection refused", cluster.ErrUnavailable)
}

// While the database is down, the log says so once (and again when it is
// back), not once per heartbeat or per challenge: an outage of minutes must
// not bury the log under the same warning.
func TestStoreDownLogsOnce(t *testing.T) {
	core, logs := observer.New(zapcore.InfoLevel)
	l := cluster.Local()
	defer l.Close()
	s := &Service{log: zap.New(core), now: time.Now, cl: lostCluster{l}, local: nil}
	for range 20 {
		s.heartbeat(context.Background())
	}
	if n := logs.Len(); n != 1 {
		for _, e := range logs.All() {
			t.Log(e.Level, e.Message)
		}
		t.Fatalf("%d log lines over 20 heartbeats without the database, want 1", n)
	}
}
