package signalclient_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"meshd/internal/keys"
	"meshd/internal/signal"
	"meshd/internal/signalclient"
)

// After a stream that had worked ends (a server restart), the reconnect
// waits stay within RecoverBackoff however many attempts fail while the
// server is away, so the client is back soon after the server is.
func TestReconnectSoonAfterServerRestart(t *testing.T) {
	var (
		current  atomic.Pointer[signal.Server]
		refusals atomic.Int64
	)
	hs := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s := current.Load()
		if s == nil {
			refusals.Add(1)
			http.Error(w, "restarting", http.StatusServiceUnavailable)
			return
		}
		_, h := s.Handler()
		h.ServeHTTP(w, r)
	}))
	p := new(http.Protocols)
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	hs.Config.Protocols = p
	hs.Start()
	defer hs.Close()
	start := func() *signal.Server {
		s := signal.New(signal.Options{Log: zaptest.NewLogger(t).Named("signal")})
		current.Store(s)
		return s
	}
	first := start()

	priv, _ := keys.Generate()
	const recoverCap = 100 * time.Millisecond
	c, err := signalclient.New(signalclient.Options{URL: hs.URL, Private: priv, Log: zaptest.NewLogger(t).Named("client"),
		MinBackoff: 10 * time.Millisecond, MaxBackoff: time.Minute, RecoverBackoff: recoverCap,
		StableAfter: time.Nanosecond})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = c.Run(runCtx) }()
	defer func() { cancel(); <-done }()
	if err := c.WaitConnected(ctx(t)); err != nil {
		t.Fatal(err)
	}

	// The server goes away and refuses attempts until the client has
	// failed 13 times: without the recovery cap, doubling from 10 ms, its
	// wait would be 20–41 s by then. The bound checked leaves room for
	// slow round trips on a loaded machine.
	current.Store(nil)
	_ = first.Close()
	deadline := time.Now().Add(30 * time.Second)
	for refusals.Load() < 13 {
		if time.Now().After(deadline) {
			t.Fatalf("only %d attempts in 30 s", refusals.Load())
		}
		time.Sleep(5 * time.Millisecond) // polling the attempt count
	}
	back := time.Now()
	second := start()
	defer second.Close()
	if err := c.WaitConnected(ctx(t)); err != nil {
		t.Fatal(err)
	}
	took := time.Since(back)
	t.Logf("reconnected %s after the server came back (%d refused attempts)", took.Round(time.Millisecond), refusals.Load())
	if took > recoverCap+3*time.Second {
		t.Fatalf("reconnect took %s after the server came back, want within the %s recovery cap (plus connect time)", took, recoverCap)
	}
}
