// Package signaltest runs a real signal server on loopback (Connect over
// HTTP/2, with a pinned self-signed certificate or h2c) and real
// signalclient peers against it, for the tests of signal, signalclient and
// the agent.
package signaltest

import (
	"context"
	"crypto/tls"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"meshd/internal/keys"
	"meshd/internal/signal"
	"meshd/internal/signalclient"
	"meshd/internal/tlsconf"
)

// Harness is a signal server on loopback.
type Harness struct {
	Signal *signal.Server
	HTTP   *httptest.Server
	URL    string
	Pin    string // empty for h2c
}

// Options of a harness.
type Options struct {
	Signal signal.Options
	// H2C serves HTTP/2 without TLS, as `--insecure` does.
	H2C bool
	// Quiet logs nothing (benchmarks with many peers).
	Quiet bool
}

// Start runs a signal server until the test ends.
func Start(tb testing.TB, opts Options) *Harness {
	tb.Helper()
	if opts.Signal.Log == nil {
		opts.Signal.Log = logger(tb, opts.Quiet).Named("signal")
	}
	sig := signal.New(opts.Signal)
	mux := http.NewServeMux()
	mux.Handle(sig.Handler())
	hs := httptest.NewUnstartedServer(mux)
	h := &Harness{Signal: sig, HTTP: hs}
	if opts.H2C {
		p := new(http.Protocols)
		p.SetHTTP1(true)
		p.SetUnencryptedHTTP2(true)
		hs.Config.Protocols = p
		hs.Start()
	} else {
		cert, pin, err := tlsconf.LoadOrCreateSelfSigned(tb.TempDir(), []string{"127.0.0.1"})
		if err != nil {
			tb.Fatal(err)
		}
		hs.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
		hs.EnableHTTP2 = true
		hs.StartTLS()
		h.Pin = pin
	}
	h.URL = hs.URL
	tb.Cleanup(func() {
		_ = sig.Close()
		hs.CloseClientConnections()
		hs.Close()
	})
	return h
}

func logger(tb testing.TB, quiet bool) *zap.Logger {
	if quiet {
		return zap.NewNop()
	}
	return zaptest.NewLogger(tb)
}

// Peer is a running signalclient with a fresh key.
type Peer struct {
	*signalclient.Client
	Key  keys.Private
	stop func()
}

// Stop ends the peer's Run and waits for it; the test's cleanup does it too.
func (p *Peer) Stop() { p.stop() }

// PeerOptions adjust a peer.
type PeerOptions struct {
	// Key, if set, is used instead of a fresh one.
	Key keys.Private
	// Quiet logs nothing.
	Quiet bool
	// Connect: do not wait for the peer to register.
	NoWait bool
	// OnMessage is installed before Run starts.
	OnMessage func(from keys.Key, payload []byte)
	// Ticket is shown to signal at registration (see Tickets.Issue).
	Ticket []byte
	// HTTPClient, if set, is used instead of one made from the URL (to
	// connect from another source address, say).
	HTTPClient *http.Client
}

// Peer starts a client against the harness and waits until it is
// registered.
func (h *Harness) Peer(tb testing.TB, o PeerOptions) *Peer {
	tb.Helper()
	priv := o.Key
	if priv.IsZero() {
		var err error
		if priv, err = keys.Generate(); err != nil {
			tb.Fatal(err)
		}
	}
	c, err := signalclient.New(signalclient.Options{
		URL: h.URL, Pin: h.Pin, Private: priv,
		Log:        logger(tb, o.Quiet).Named("client"),
		MinBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond,
		Ticket: func() []byte { return o.Ticket }, HTTPClient: o.HTTPClient,
	})
	if err != nil {
		tb.Fatal(err)
	}
	if o.OnMessage != nil {
		c.OnMessage(o.OnMessage)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := c.Run(ctx); err != nil {
			tb.Errorf("signalclient.Run: %v", err)
		}
	}()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			<-done
		})
	}
	tb.Cleanup(stop)
	p := &Peer{Client: c, Key: priv, stop: stop}
	if !o.NoWait {
		wctx, wcancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer wcancel()
		if err := c.WaitConnected(wctx); err != nil {
			tb.Fatalf("peer did not register: %v (state %+v)", err, c.State())
		}
	}
	return p
}
