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
	"meshd/internal/netmap"
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

func (lostCluster) Present(context.Context, string) ([]string, error) {
	return nil, fmt.Errorf("pgcluster: present: %w: connection refused", cluster.ErrUnavailable)
}

// Presence messages that cannot be checked against the lost database are
// not a warning each either.
func TestStoreDownPresenceLogsOnce(t *testing.T) {
	core, logs := observer.New(zapcore.InfoLevel)
	l := cluster.Local()
	defer l.Close()
	s := &Service{log: zap.New(core), now: time.Now, cl: lostCluster{l}}
	a, err := newAccount(s, testData())
	if err != nil {
		t.Fatal(err)
	}
	s.accounts = append(s.accounts, a)
	for range 20 {
		s.applyPresence(context.Background(), busMsg{Account: "acct", Kind: kindPresence, Change: netmap.Change{Entries: []string{"p1"}}})
	}
	if n := logs.Len(); n != 1 {
		t.Fatalf("%d log lines over 20 presence messages without the database, want 1", n)
	}
}
