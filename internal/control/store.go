package control

import (
	"context"
	"errors"
	"strings"
	"time"

	"go.uber.org/zap"

	"meshd/internal/cluster"
	"meshd/store"
)

// Store is what control needs of its database. *store.Store provides it;
// tests put a wrapper in between that loses the database on demand.
type Store interface {
	Write(ctx context.Context, fn func(*store.Tx) error) error
	Accounts(ctx context.Context) ([]store.Account, error)
	LoadAccount(ctx context.Context, id string) (*store.AccountData, error)
	AdminTokens(ctx context.Context) ([]store.AdminToken, error)
	TouchAdminToken(ctx context.Context, id string, at time.Time) error
	Events(ctx context.Context, accountID string, limit int) ([]store.Event, error)
	SecretOrCreate(ctx context.Context, name string, gen func() ([]byte, error)) ([]byte, error)
	TakeSerials(ctx context.Context, accountID string, n int) (uint64, error)
	SetPeerLastSeen(ctx context.Context, peerID string, at time.Time) error
	LoadSSO(ctx context.Context, accountID string) (*store.SSOData, error)
}

var _ Store = (*store.Store)(nil)

// unavailableError is what a change refused for a lost database says.
type unavailableError struct{ reason string }

func (e *unavailableError) Error() string {
	return "store unavailable: " + e.reason + "; changes are refused until the database is back"
}

func (e *unavailableError) Unwrap() error { return cluster.ErrUnavailable }

// storeDown is the state of a lost database: why and since when.
type storeDown struct {
	reason string
	since  time.Time
}

// reasonOf is the database's own words for a lost database, without the
// "store unavailable: " that wrapping layers put before them.
func reasonOf(err error) string {
	msg := err.Error()
	for {
		i := strings.Index(msg, cluster.ErrUnavailable.Error()+": ")
		if i < 0 {
			return msg
		}
		msg = msg[i+len(cluster.ErrUnavailable.Error())+2:]
	}
}

// fault records err when it says the database is lost and reports whether
// it did. Replicas then serve what they hold, refuse changes, and probe the
// database until it answers again (see probeStore).
func (s *Service) fault(err error) bool {
	if err == nil || !errors.Is(err, cluster.ErrUnavailable) {
		return false
	}
	d := &storeDown{reason: reasonOf(err), since: s.now()}
	if s.down.CompareAndSwap(nil, d) {
		s.log.Error("store unavailable: serving what this replica holds, refusing changes until the database is back",
			zap.Error(err))
	}
	return true
}

// faultLog returns how to log a failed store or cluster call: at debug
// level when it is the lost database, which fault has said once already
// (a replica without its database would otherwise warn at every
// heartbeat, challenge and presence change), else as a warning.
func (s *Service) faultLog(l *zap.Logger, err error) func(string, ...zap.Field) {
	if s.fault(err) {
		return l.Debug
	}
	return l.Warn
}

// refused returns the error of a change refused because the database is
// lost, nil while it is available.
func (s *Service) refused() error {
	if d := s.down.Load(); d != nil {
		return &unavailableError{reason: d.reason}
	}
	return nil
}

// storeError turns a failed store call into the error callers see: a
// lost database becomes an unavailableError.
func (s *Service) storeError(err error) error {
	if s.fault(err) {
		return &unavailableError{reason: reasonOf(err)}
	}
	return err
}

// storeProbe is how often a replica that lost its database asks whether it
// is back.
const storeProbe = 500 * time.Millisecond

// probeStore brings the replica back once the database answers again:
// it reloads everything (other replicas may have changed it meanwhile),
// then accepts changes again. No restart needed.
func (s *Service) probeStore(ctx context.Context) {
	t := time.NewTicker(storeProbe)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		d := s.down.Load()
		if d == nil {
			continue
		}
		if _, err := s.st.Accounts(ctx); err != nil {
			continue
		}
		if err := s.resyncAll(ctx); err != nil {
			s.log.Warn("database answers again, but reloading failed; retrying", zap.Error(err))
			continue
		}
		if s.down.CompareAndSwap(d, nil) {
			s.log.Info("store available again: changes are accepted", zap.Duration("down", s.now().Sub(d.since)))
		}
	}
}
