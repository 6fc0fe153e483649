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
// away; without that cap they would have grown to seconds by the tenth.
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
		case call <= 10: // control still away
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
	c := newFake(t, f, Options{MinBackoff: 10 * time.Millisecond, MaxBackoff: 10 * time.Second,
		RecoverBackoff: recoverCap, StableAfter: time.Nanosecond})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- c.Sync(ctx, func(*controlv1.NetworkMap) {}, nil) }()
	select {
	case <-back:
	case <-time.After(20 * time.Second):
		t.Fatal("no reconnect within 20 s")
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
	if worst > recoverCap+300*time.Millisecond {
		t.Fatalf("a wait of %s between attempts, want within the %s recovery cap (plus a round trip)", worst, recoverCap)
	}
}
