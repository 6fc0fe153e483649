package controlclient

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"go.uber.org/zap/zaptest"

	controlv1 "meshd/api/control/v1"
	"meshd/api/control/v1/controlv1connect"
	"meshd/internal/keys"
)

func (f *fakeControl) Login(context.Context, *connect.Request[controlv1.LoginRequest]) (*connect.Response[controlv1.LoginResponse], error) {
	return connect.NewResponse(&controlv1.LoginResponse{Self: &controlv1.SelfConfig{Name: "a", OverlayIp: "100.64.0.1"}}), nil
}

// replica starts a fake control replica on loopback.
func replica(t *testing.T, f controlv1connect.ControlServiceHandler) *httptest.Server {
	t.Helper()
	mux := http.NewServeMux()
	mux.Handle(controlv1connect.NewControlServiceHandler(f))
	srv := httptest.NewUnstartedServer(mux)
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(srv.Close)
	t.Cleanup(srv.Client().CloseIdleConnections)
	return srv
}

// kill stops a replica the way kill -9 does: its port refuses and its
// connections break.
func kill(srv *httptest.Server) {
	srv.Listener.Close()
	srv.CloseClientConnections()
}

// deadURL is an https URL on a loopback port nobody listens on.
func deadURL(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return "https://" + addr
}

// The replica an agent streams from dies: with the default backoff the
// client streams from another replica within 10 s, named by the first
// replica's map.
func TestSyncMovesToAnotherReplica(t *testing.T) {
	var second *httptest.Server
	one := &fakeControl{sync: func(ctx context.Context, call int, s *connect.ServerStream[controlv1.SyncResponse]) error {
		if err := s.Send(&controlv1.SyncResponse{Map: &controlv1.NetworkMap{Serial: 1, ControlUrls: []string{second.URL}}}); err != nil {
			return err
		}
		<-ctx.Done()
		return nil
	}}
	two := &fakeControl{sync: func(ctx context.Context, call int, s *connect.ServerStream[controlv1.SyncResponse]) error {
		if err := sendMap(s, 2); err != nil {
			return err
		}
		<-ctx.Done()
		return nil
	}}
	first := replica(t, one)
	second = replica(t, two)
	k, _ := keys.Generate()
	// The client knows only the first replica: the map tells it the rest.
	c, err := New(Options{URL: first.URL, Private: k, HTTPClient: first.Client(), Log: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var (
		mu     sync.Mutex
		killed time.Time
		moved  time.Duration
	)
	got := make(chan uint64, 4)
	done := make(chan error, 1)
	go func() {
		done <- c.Sync(ctx, func(m *controlv1.NetworkMap) {
			mu.Lock()
			if m.Serial == 2 {
				moved = time.Since(killed)
			}
			mu.Unlock()
			got <- m.Serial
		}, nil)
	}()
	if s := waitSerial(t, got); s != 1 {
		t.Fatalf("first map %d", s)
	}
	if urls := c.URLs(); !slices.Equal(urls, []string{first.URL, second.URL}) {
		t.Fatalf("URLs after the first map = %v", urls)
	}
	mu.Lock()
	killed = time.Now()
	mu.Unlock()
	kill(first)
	if s := waitSerial(t, got); s != 2 {
		t.Fatalf("map %d after the replica died, want 2 from the second", s)
	}
	mu.Lock()
	took := moved
	mu.Unlock()
	t.Logf("streaming from the second replica %s after the first died", took.Round(time.Millisecond))
	if took > 10*time.Second {
		t.Fatalf("moved after %s, want within 10 s", took)
	}
	if c.URL() != second.URL {
		t.Fatalf("URL() = %s, want %s", c.URL(), second.URL)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Sync = %v", err)
	}
}

func waitSerial(t *testing.T, got <-chan uint64) uint64 {
	t.Helper()
	select {
	case s := <-got:
		return s
	case <-time.After(30 * time.Second):
		t.Fatal("no map within 30 s")
		return 0
	}
}

// A join token whose first URL is dead joins through the next one, and
// the client stays there.
func TestLoginSkipsDeadReplica(t *testing.T) {
	live := replica(t, &fakeControl{})
	dead := deadURL(t)
	k, _ := keys.Generate()
	c, err := New(Options{URL: dead, URLs: []string{live.URL}, Private: k, HTTPClient: live.Client(), Log: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	self, err := c.Login(ctx, "K")
	if err != nil || self.GetName() != "a" {
		t.Fatalf("Login = %v, %v", self, err)
	}
	if c.URL() != live.URL {
		t.Fatalf("URL() = %s after login, want %s", c.URL(), live.URL)
	}
	// Every replica down: the error is the first replica's, and each was
	// tried once.
	kill(live)
	if _, err := c.Login(ctx, "K"); err == nil {
		t.Fatal("Login with every replica down succeeded")
	}
}

// A refusal is control's answer: the next replica would say the same, so
// Login does not ask it.
func TestLoginStopsAtRefusal(t *testing.T) {
	refusing := &refusingLogin{}
	one := replica(t, refusing)
	other := &fakeControl{}
	two := replica(t, other)
	k, _ := keys.Generate()
	c, err := New(Options{URL: one.URL, URLs: []string{two.URL}, Private: k, HTTPClient: one.Client(), Log: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Login(context.Background(), "K"); !errors.Is(err, ErrSetupKeyUsed) {
		t.Fatalf("Login = %v, want ErrSetupKeyUsed", err)
	}
	if c.URL() != one.URL {
		t.Fatalf("moved to %s after a refusal", c.URL())
	}
}

type refusingLogin struct{ fakeControl }

func (r *refusingLogin) Login(context.Context, *connect.Request[controlv1.LoginRequest]) (*connect.Response[controlv1.LoginResponse], error) {
	e := connect.NewError(connect.CodePermissionDenied, errors.New("setup key already used"))
	d, _ := connect.NewErrorDetail(&controlv1.ErrorDetail{Reason: controlv1.Reason_REASON_SETUP_KEY_USED})
	e.AddDetail(d)
	return nil, e
}
