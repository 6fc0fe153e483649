package controlclient

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	controlv1 "meshd/api/control/v1"
)

// After a stream that had worked ends (a control restart), reconnect waits
// stay within RecoverBackoff however many attempts fail while control is
// away; without that cap, doubling from 10 ms, the wait after the 13th
// failure would be 20–41 s. The bound checked leaves room for slow round
// trips on a loaded machine.
func TestSyncReconnectsSoonAfterRestart(t *testing.T) {
	const recoverCap = 100 * time.Millisecond
	var (
		mu    sync.Mutex
		calls []time.Time
	)
	back := make(chan struct{})
	f := &fakeControl{sync: func(ctx context.Context, call int, s *connect.ServerStream[controlv1.SyncResponse]) error {
		mu.Lock()
		calls = append(calls, time.Now())
		mu.Unlock()
		switch {
		case call == 1: // the stream that worked, then the restart
			if err := sendMap(s, 1); err != nil {
				return err
			}
			return connect.NewError(connect.CodeUnavailable, errors.New("control is shutting down"))
		case call <= 14: // control still away
			return connect.NewError(connect.CodeUnavailable, errors.New("control is restarting"))
		default:
			close(back)
			if err := sendMap(s, 2); err != nil {
				return err
			}
			<-ctx.Done()
			return nil
		}
	}}
	c := newFake(t, f, Options{MinBackoff: 10 * time.Millisecond,
		MaxBackoff: time.Minute, RecoverBackoff: recoverCap, StableAfter: time.Nanosecond})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- c.Sync(ctx, func(*controlv1.NetworkMap) {}, nil) }()
	select {
	case <-back:
	case <-time.After(60 * time.Second):
		t.Fatal("no reconnect within 60 s")
	}
	cancel()
	<-done
	mu.Lock()
	defer mu.Unlock()
	var worst time.Duration
	for i := 1; i < len(calls); i++ {
		worst = max(worst, calls[i].Sub(calls[i-1]))
	}
	t.Logf("%d attempts, longest wait between them %s, all in %s", len(calls), worst.Round(time.Millisecond), calls[len(calls)-1].Sub(calls[0]).Round(time.Millisecond))
	if worst > recoverCap+3*time.Second {
		t.Fatalf("a wait of %s between attempts, want within the %s recovery cap (plus a round trip)", worst, recoverCap)
	}
}
