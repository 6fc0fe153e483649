package signalclient_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"go.uber.org/goleak"
	"go.uber.org/zap/zaptest"

	signalv1 "meshd/api/signal/v1"
	"meshd/api/signal/v1/signalv1connect"
	"meshd/internal/keys"
	"meshd/internal/signal/signaltest"
	"meshd/internal/signalclient"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func ctx(tb testing.TB) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	tb.Cleanup(cancel)
	return c
}

func TestHandlerMayReplyFromInsideTheCallback(t *testing.T) {
	h := signaltest.Start(t, signaltest.Options{H2C: true})
	answers := make(chan string, 1)
	a := h.Peer(t, signaltest.PeerOptions{OnMessage: func(_ keys.Key, p []byte) { answers <- string(p) }})
	var b *signaltest.Peer
	ready := make(chan struct{})
	replied := make(chan error, 1)
	b = h.Peer(t, signaltest.PeerOptions{OnMessage: func(from keys.Key, p []byte) {
		<-ready
		// Send waits for signal's answer, which the same stream carries.
		replied <- b.Send(context.Background(), from, append([]byte("answer to "), p...))
	}})
	close(ready)
	if err := a.Send(ctx(t), b.PublicKey(), []byte("offer")); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-answers:
		if got != "answer to offer" {
			t.Fatalf("got %q", got)
		}
	case <-ctx(t).Done():
		t.Fatal("no answer: the callback deadlocked")
	}
	if err := <-replied; err != nil {
		t.Fatalf("reply: %v", err)
	}
}

func TestStateAndSendWhileDisconnected(t *testing.T) {
	h := signaltest.Start(t, signaltest.Options{})
	priv, _ := keys.Generate()
	c, err := signalclient.New(signalclient.Options{URL: h.URL, Pin: h.Pin, Private: priv, Log: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if st := c.State(); st.State != signalclient.Disconnected {
		t.Fatalf("before Run: %v", st.State)
	}
	if err := c.Send(ctx(t), priv.Public(), []byte("x")); !errors.Is(err, signalclient.ErrDisconnected) {
		t.Fatalf("send before Run: %v, want ErrDisconnected", err)
	}
	var mu sync.Mutex
	var seen []signalclient.State
	c.OnState(func(s signalclient.Status) {
		mu.Lock()
		seen = append(seen, s.State)
		mu.Unlock()
	})
	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(runCtx) }()
	if err := c.WaitConnected(ctx(t)); err != nil {
		t.Fatal(err)
	}
	if err := c.Run(runCtx); err == nil {
		t.Fatal("a second Run was allowed")
	}
	// Sending to oneself works: signal does not care.
	if err := c.Send(ctx(t), priv.Public(), []byte("x")); err != nil {
		t.Fatal(err)
	}
	stop()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	want := []signalclient.State{signalclient.Connecting, signalclient.Connected, signalclient.Connecting, signalclient.Disconnected}
	if len(seen) < 3 || seen[0] != want[0] || seen[1] != want[1] || seen[len(seen)-1] != signalclient.Disconnected {
		t.Fatalf("states %v, want %v", seen, want)
	}
	if st := c.State(); st.State != signalclient.Disconnected || st.Sent != 1 {
		t.Fatalf("after Run: %+v", st)
	}
}

func TestNewRefusesBadOptions(t *testing.T) {
	priv, _ := keys.Generate()
	for _, o := range []signalclient.Options{
		{URL: "ftp://x", Private: priv},
		{URL: "http://x", Pin: "sha256:00", Private: priv},
		{URL: "https://x:1"},
	} {
		if _, err := signalclient.New(o); err == nil {
			t.Errorf("New(%+v) accepted", o)
		}
	}
}

// silentServer registers every peer and then never sends again.
type silentServer struct{ streams atomic.Int32 }

func (s *silentServer) Connect(ctx context.Context, bs *connect.BidiStream[signalv1.ClientMessage, signalv1.ServerMessage]) error {
	s.streams.Add(1)
	server, _ := keys.Generate()
	pub := server.Public()
	if _, err := bs.Receive(); err != nil {
		return err
	}
	if err := bs.Send(&signalv1.ServerMessage{Msg: &signalv1.ServerMessage_Challenge{Challenge: &signalv1.Challenge{ServerPublicKey: pub[:], Challenge: []byte("c")}}}); err != nil {
		return err
	}
	if _, err := bs.Receive(); err != nil {
		return err
	}
	if err := bs.Send(&signalv1.ServerMessage{Msg: &signalv1.ServerMessage_Registered{Registered: &signalv1.Registered{HeartbeatIntervalMs: 30, MaxMessageBytes: 1024}}}); err != nil {
		return err
	}
	for {
		if _, err := bs.Receive(); err != nil {
			return nil
		}
	}
}

func TestClientDropsASilentServer(t *testing.T) {
	srv := &silentServer{}
	mux := http.NewServeMux()
	mux.Handle(signalv1connect.NewSignalServiceHandler(srv))
	hs := httptest.NewUnstartedServer(mux)
	p := new(http.Protocols)
	p.SetUnencryptedHTTP2(true)
	hs.Config.Protocols = p
	hs.Start()
	t.Cleanup(hs.Close)

	priv, _ := keys.Generate()
	c, err := signalclient.New(signalclient.Options{URL: hs.URL, Private: priv, Log: zaptest.NewLogger(t), MinBackoff: 10 * time.Millisecond, MaxBackoff: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(runCtx) }()
	defer func() {
		stop()
		<-done
	}()
	deadline := time.After(10 * time.Second)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for srv.streams.Load() < 2 {
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatalf("the client never gave up on the silent server: %+v", c.State())
		}
	}
	if st := c.State(); !errors.Is(st.LastError, signalclient.ErrHeartbeat) {
		t.Fatalf("last error %v, want ErrHeartbeat", st.LastError)
	}
}
