package controlclient

import (
	"context"
	"crypto/rand"
	"errors"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"go.uber.org/goleak"
	"go.uber.org/zap/zaptest"

	controlv1 "meshd/api/control/v1"
	"meshd/api/control/v1/controlv1connect"
	"meshd/internal/keys"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeControl answers Challenge and runs sync for every Sync call.
type fakeControl struct {
	controlv1connect.UnimplementedControlServiceHandler
	calls atomic.Int32
	req   atomic.Pointer[controlv1.SyncRequest] // the last Sync request
	sync  func(ctx context.Context, call int, s *connect.ServerStream[controlv1.SyncResponse]) error
}

func (f *fakeControl) Challenge(context.Context, *connect.Request[controlv1.ChallengeRequest]) (*connect.Response[controlv1.ChallengeResponse], error) {
	k, _ := keys.Generate()
	pub := k.Public()
	ch := make([]byte, 40)
	rand.Read(ch)
	return connect.NewResponse(&controlv1.ChallengeResponse{ServerPublicKey: pub[:], Challenge: ch}), nil
}

func (f *fakeControl) Sync(ctx context.Context, req *connect.Request[controlv1.SyncRequest], s *connect.ServerStream[controlv1.SyncResponse]) error {
	f.req.Store(req.Msg)
	return f.sync(ctx, int(f.calls.Add(1)), s)
}

func newFake(t *testing.T, f *fakeControl, o Options) *Client {
	t.Helper()
	mux := http.NewServeMux()
	mux.Handle(controlv1connect.NewControlServiceHandler(f))
	srv := httptest.NewUnstartedServer(mux)
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(srv.Close)
	t.Cleanup(srv.Client().CloseIdleConnections)
	k, _ := keys.Generate()
	o.URL, o.Private, o.HTTPClient, o.Log = srv.URL, k, srv.Client(), zaptest.NewLogger(t)
	if o.MinBackoff == 0 {
		o.MinBackoff, o.MaxBackoff = time.Millisecond, 10*time.Millisecond
	}
	c, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func sendMap(s *connect.ServerStream[controlv1.SyncResponse], serial uint64) error {
	return s.Send(&controlv1.SyncResponse{Map: &controlv1.NetworkMap{Serial: serial}})
}

// Maps older than the one held are dropped, also across reconnects.
func TestSyncDropsOlderMaps(t *testing.T) {
	f := &fakeControl{sync: func(ctx context.Context, call int, s *connect.ServerStream[controlv1.SyncResponse]) error {
		serials := map[int][]uint64{1: {5, 3, 7}, 2: {6, 7, 9}}[call]
		for _, n := range serials {
			if err := sendMap(s, n); err != nil {
				return err
			}
		}
		if call == 1 {
			return connect.NewError(connect.CodeUnavailable, errors.New("restarting"))
		}
		<-ctx.Done()
		return nil
	}}
	c := newFake(t, f, Options{})
	ctx, cancel := context.WithCancel(context.Background())
	var mu sync.Mutex
	var got []uint64
	err := c.Sync(ctx, func(m *controlv1.NetworkMap) {
		mu.Lock()
		defer mu.Unlock()
		got = append(got, m.Serial)
		if m.Serial == 9 {
			cancel()
		}
	}, nil)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Sync = %v", err)
	}
	if !slices.Equal(got, []uint64{5, 7, 9}) || c.Serial() != 9 {
		t.Fatalf("maps %v, serial %d", got, c.Serial())
	}
}

// A stream that goes silent is detected by the missing heartbeats and
// replaced by a new one.
func TestSyncDetectsDeadStream(t *testing.T) {
	f := &fakeControl{sync: func(ctx context.Context, call int, s *connect.ServerStream[controlv1.SyncResponse]) error {
		if err := sendMap(s, uint64(call)); err != nil {
			return err
		}
		<-ctx.Done() // silent: no heartbeats
		return nil
	}}
	c := newFake(t, f, Options{HeartbeatTimeout: 50 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	var states []error
	var mu sync.Mutex
	err := c.Sync(ctx, func(m *controlv1.NetworkMap) {
		if m.Serial == 2 {
			cancel()
		}
	}, func(up bool, err error) {
		mu.Lock()
		defer mu.Unlock()
		if !up {
			states = append(states, err)
		}
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Sync = %v", err)
	}
	if len(states) == 0 || !errors.Is(states[0], ErrNoHeartbeat) {
		t.Fatalf("disconnect reasons %v, want ErrNoHeartbeat first", states)
	}
}

// Heartbeats keep a quiet stream alive.
func TestSyncHeartbeatsKeepStream(t *testing.T) {
	f := &fakeControl{sync: func(ctx context.Context, call int, s *connect.ServerStream[controlv1.SyncResponse]) error {
		if err := sendMap(s, 1); err != nil {
			return err
		}
		// 40 heartbeats 20 ms apart: the stream lives well past the
		// timeout, which only the heartbeats can bridge; the margin between
		// period and timeout absorbs a loaded machine under -race.
		for range 40 {
			time.Sleep(20 * time.Millisecond) // the fake control's heartbeat period
			if err := s.Send(&controlv1.SyncResponse{}); err != nil {
				return err
			}
		}
		return sendMap(s, 2)
	}}
	c := newFake(t, f, Options{HeartbeatTimeout: 300 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	c.Sync(ctx, func(m *controlv1.NetworkMap) {
		if m.Serial == 2 {
			cancel()
		}
	}, nil)
	if n := f.calls.Load(); n != 1 {
		t.Fatalf("%d streams, want 1: heartbeats did not keep it", n)
	}
}

// Refusals that retrying cannot fix end Sync with a typed error.
func TestSyncReturnsRefusals(t *testing.T) {
	for reason, want := range map[controlv1.Reason]error{
		controlv1.Reason_REASON_PEER_UNKNOWN:  ErrPeerUnknown,
		controlv1.Reason_REASON_LOGIN_EXPIRED: ErrLoginExpired,
	} {
		f := &fakeControl{sync: func(context.Context, int, *connect.ServerStream[controlv1.SyncResponse]) error {
			e := connect.NewError(connect.CodeUnauthenticated, errors.New("login expired: run meshd up --setup-key KEY"))
			d, _ := connect.NewErrorDetail(&controlv1.ErrorDetail{Reason: reason})
			e.AddDetail(d)
			return e
		}}
		c := newFake(t, f, Options{})
		err := c.Sync(context.Background(), func(*controlv1.NetworkMap) {}, nil)
		var re *RefusedError
		if !errors.Is(err, want) || !errors.As(err, &re) || re.Reason != reason || f.calls.Load() != 1 {
			t.Fatalf("%v: Sync = %v after %d calls", reason, err, f.calls.Load())
		}
		if err.Error() != "login expired: run meshd up --setup-key KEY" {
			t.Fatalf("message = %q", err)
		}
	}
}

// While control is unreachable Sync keeps retrying without growing: no
// goroutines or timers pile up (goleak checks the rest at exit).
func TestSyncUnreachableStaysFlat(t *testing.T) {
	var calls atomic.Int32
	f := &fakeControl{sync: func(context.Context, int, *connect.ServerStream[controlv1.SyncResponse]) error {
		calls.Add(1)
		return connect.NewError(connect.CodeUnavailable, errors.New("down"))
	}}
	c := newFake(t, f, Options{MinBackoff: time.Microsecond, MaxBackoff: time.Microsecond})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- c.Sync(ctx, func(*controlv1.NetworkMap) {}, nil) }()
	deadline := time.Now().Add(10 * time.Second)
	for f.calls.Load() < 200 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Sync = %v", err)
	}
	if f.calls.Load() < 200 {
		t.Fatalf("only %d attempts", f.calls.Load())
	}
}
