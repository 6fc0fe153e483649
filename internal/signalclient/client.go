// Package signalclient is the agent's side of signal: it keeps one
// registered stream to the signal server alive (reconnecting with backoff),
// seals each payload end to end for its recipient before sending it, and
// opens, replay-checks and hands over what other peers send. Send reports
// signal's answer for every envelope, so the agent learns at once that a
// peer is offline. Only internal/agent and internal/signal/signaltest import it; the
// signal server lives in internal/signal.
package signalclient

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"go.uber.org/zap"

	signalv1 "meshd/api/signal/v1"
	"meshd/api/signal/v1/signalv1connect"
	"meshd/internal/backoff"
	"meshd/internal/keys"
	"meshd/internal/rpcclient"
	"meshd/internal/seal"
)

// Defaults for zero Options fields.
const (
	DefaultReplayWindow = 5 * time.Minute
	DefaultMinBackoff   = 250 * time.Millisecond
	DefaultMaxBackoff   = 30 * time.Second
	// DefaultStableAfter is how long a registered stream must have lived for its
	// end to count as the loss of a working stream (a server restart, most
	// often): the reconnect waits then stay short for a while
	// (internal/backoff). A stream that drops sooner is retried with the
	// waits starting from MinBackoff, without that cap.
	DefaultStableAfter = 10 * time.Second
	// HandshakeTimeout bounds connecting and registering.
	HandshakeTimeout = 10 * time.Second
	// receiveQueueLen bounds opened messages waiting for the handler.
	receiveQueueLen = 1024
	// readMaxBytes bounds one message from the server: a batch, or one
	// envelope of the largest size signal can be configured for (1 MiB).
	readMaxBytes = 4 << 20
)

// missedHeartbeats is how many heartbeat intervals the server may stay silent
// before the client drops the stream.
const missedHeartbeats = 3

// Options configure a Client.
type Options struct {
	// URL of the signal server: https://host:port, or http://host:port for
	// a lab server run with --insecure (h2c).
	URL string
	// Pin is the server certificate's "sha256:..." pin, for a self-signed
	// server; empty means the system's CAs verify it.
	Pin string
	// Private is this peer's WireGuard private key: it proves the peer's
	// identity to signal and seals payloads.
	Private keys.Private
	Log     *zap.Logger
	// HTTPClient overrides the HTTP/2 client made from URL and Pin.
	HTTPClient *http.Client
	// ReplayWindow is how far a message's seal time may lie from this
	// machine's clock; older or newer messages are refused as stale.
	ReplayWindow time.Duration
	// MinBackoff and MaxBackoff bound the wait between reconnects. After a
	// stream that had worked, waits stay within RecoverBackoff (default
	// backoff.DefaultRecoverMax) for a while, whatever MaxBackoff is.
	MinBackoff, MaxBackoff time.Duration
	RecoverBackoff         time.Duration
	// StableAfter is how long a stream must have lived for its end to
	// count as the loss of a working one; zero: DefaultStableAfter.
	StableAfter time.Duration
	// Now is the clock for sealing and replay checks; default time.Now.
	Now func() time.Time
	// Ticket returns control's newest ticket for this peer (from its
	// network map), shown to signal at every registration; nil or empty:
	// none, which only a signal without tickets accepts.
	Ticket func() []byte
}

// State is where the client's stream stands.
type State int

// States of a Client.
const (
	// Disconnected: Run is not running.
	Disconnected State = iota
	// Connecting: Run is connecting, or waiting to retry after a failure.
	Connecting
	// Connected: registered; Send works.
	Connected
)

func (s State) String() string {
	switch s {
	case Disconnected:
		return "disconnected"
	case Connecting:
		return "connecting"
	case Connected:
		return "connected"
	}
	return fmt.Sprintf("State(%d)", int(s))
}

// Status is a snapshot of the client for `meshd status`.
type Status struct {
	State State
	Since time.Time // when State was entered
	URL   string
	// LastError is why the last stream ended or the last attempt failed;
	// it stays set after a reconnect, for display.
	LastError error
	// Sent counts envelopes signal queued; Received counts messages handed
	// to the handler; Rejected counts messages that did not open (tampered,
	// replayed, stale, unknown sender) or found the receive queue full.
	Sent, Received, Rejected uint64
}

// Client is one peer's connection to signal.
type Client struct {
	opts  Options
	log   *zap.Logger
	pub   keys.Key
	http  *http.Client
	conns *rpcclient.Conns // of http, when the client made it
	rpc   signalv1connect.SignalServiceClient
	peers *peers

	running   atomic.Bool
	current   atomic.Pointer[session]
	nextID    atomic.Uint64
	onMessage atomic.Pointer[func(keys.Key, []byte)]
	onState   atomic.Pointer[func(Status)]
	inbox     chan inbound

	mu        sync.Mutex
	state     State
	since     time.Time
	lastErr   error
	connected chan struct{} // closed while Connected

	sent, received, rejected atomic.Uint64
	lastRejectLog            atomic.Int64
}

type inbound struct {
	from    keys.Key
	payload []byte
}

// New returns a client; Run connects it.
func New(opts Options) (*Client, error) {
	if opts.Private.IsZero() {
		return nil, errors.New("signalclient: no private key")
	}
	if opts.Log == nil {
		opts.Log = zap.NewNop()
	}
	if opts.ReplayWindow <= 0 {
		opts.ReplayWindow = DefaultReplayWindow
	}
	if opts.MinBackoff <= 0 {
		opts.MinBackoff = DefaultMinBackoff
	}
	if opts.MaxBackoff < opts.MinBackoff {
		opts.MaxBackoff = max(DefaultMaxBackoff, opts.MinBackoff)
	}
	if opts.StableAfter <= 0 {
		opts.StableAfter = DefaultStableAfter
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	c := &Client{
		opts:      opts,
		log:       opts.Log,
		pub:       opts.Private.Public(),
		http:      opts.HTTPClient,
		peers:     newPeers(opts.Private, opts.ReplayWindow, maxPeersDefault),
		inbox:     make(chan inbound, receiveQueueLen),
		connected: make(chan struct{}),
	}
	if c.http == nil {
		hc, err := rpcclient.New(opts.URL, opts.Pin)
		if err != nil {
			return nil, fmt.Errorf("signalclient: %w", err)
		}
		c.http = hc
		if t, ok := hc.Transport.(*http.Transport); ok {
			c.conns = rpcclient.Track(t)
		}
	}
	base := c.http.Transport
	if base == nil {
		base = http.DefaultTransport
	}
	framed := &http.Client{Transport: wholeMessages{base}, Timeout: c.http.Timeout, Jar: c.http.Jar, CheckRedirect: c.http.CheckRedirect}
	c.rpc = signalv1connect.NewSignalServiceClient(framed, opts.URL,
		connect.WithAcceptCompression("gzip", nil, nil), // sealed payloads do not compress
		connect.WithReadMaxBytes(readMaxBytes),
	)
	return c, nil
}

// PublicKey returns this peer's public key.
func (c *Client) PublicKey() keys.Key { return c.pub }

// OnMessage sets the handler of opened messages. It runs on one goroutine,
// in the order messages arrived, and may call Send. Messages that arrive
// while it falls more than a thousand behind are dropped and counted as
// rejected. Messages before the first OnMessage are dropped.
func (c *Client) OnMessage(fn func(from keys.Key, payload []byte)) { c.onMessage.Store(&fn) }

// OnState sets a function called on every state change, with the new
// status. It must not block.
func (c *Client) OnState(fn func(Status)) { c.onState.Store(&fn) }

// State returns the client's status.
func (c *Client) State() Status {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.statusLocked()
}

func (c *Client) statusLocked() Status {
	return Status{
		State:     c.state,
		Since:     c.since,
		URL:       c.opts.URL,
		LastError: c.lastErr,
		Sent:      c.sent.Load(),
		Received:  c.received.Load(),
		Rejected:  c.rejected.Load(),
	}
}

func (c *Client) setState(s State, err error) {
	c.mu.Lock()
	if err != nil {
		c.lastErr = err
	}
	changed := s != c.state
	if changed {
		if s == Connected {
			close(c.connected)
		} else if c.state == Connected {
			c.connected = make(chan struct{})
		}
		c.state, c.since = s, time.Now()
	}
	st := c.statusLocked()
	c.mu.Unlock()
	if fn := c.onState.Load(); fn != nil && changed {
		(*fn)(st)
	}
}

// WaitConnected blocks until the client is registered or ctx ends.
func (c *Client) WaitConnected(ctx context.Context) error {
	c.mu.Lock()
	ch := c.connected
	c.mu.Unlock()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Run keeps one registered stream to signal until ctx ends, reconnecting
// with exponential backoff and jitter. It returns nil when ctx ends, and an
// error only when it cannot run at all.
func (c *Client) Run(ctx context.Context) error {
	if !c.running.CompareAndSwap(false, true) {
		return errors.New("signalclient: Run is already running")
	}
	defer c.running.Store(false)
	if c.conns != nil {
		defer c.conns.CloseAll()
	}
	var wg sync.WaitGroup
	dctx, stopDispatch := context.WithCancel(ctx)
	wg.Go(func() { c.dispatch(dctx) })
	defer wg.Wait()
	defer stopDispatch()
	defer c.setState(Disconnected, nil)

	b := backoff.Backoff{Min: c.opts.MinBackoff, Max: c.opts.MaxBackoff, RecoverMax: c.opts.RecoverBackoff}
	for {
		c.setState(Connecting, nil)
		began := time.Now()
		registered, err := c.runSession(ctx)
		if ctx.Err() != nil {
			return nil
		}
		switch {
		case !registered || errors.Is(err, ErrReplaced):
		case time.Since(began) >= c.opts.StableAfter:
			b.Lost(time.Now())
		default:
			b.Reset()
		}
		delay := b.Next(time.Now())
		c.setState(Connecting, err)
		c.log.Warn("signal stream ended; reconnecting", zap.Error(err), zap.Duration("in", delay))
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil
		}
	}
}

// dispatch hands opened messages to the handler, in order.
func (c *Client) dispatch(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case m := <-c.inbox:
			if fn := c.onMessage.Load(); fn != nil {
				c.received.Add(1)
				(*fn)(m.from, m.payload)
			}
		}
	}
}

// receive opens one envelope and queues it for the handler.
func (c *Client) receive(env *signalv1.Envelope) {
	from, err := keys.PublicFromBytes(env.From)
	if err != nil {
		c.reject(keys.Key{}, err)
		return
	}
	now := c.opts.Now()
	p, err := c.peers.get(from)
	if err != nil {
		c.reject(from, err)
		return
	}
	payload, err := p.box.OpenMessage(env.Sealed, env.Nonce, p.guard, now)
	if err != nil {
		c.reject(from, err)
		return
	}
	select {
	case c.inbox <- inbound{from: from, payload: payload}:
	default:
		c.reject(from, errors.New("receive queue full; the message handler is too slow"))
	}
}

// reject counts a refused message and logs it, at warn level at most once
// a second so that a flood cannot flood the log.
func (c *Client) reject(from keys.Key, err error) {
	c.rejected.Add(1)
	now := time.Now().UnixNano()
	last := c.lastRejectLog.Load()
	lvl := zap.DebugLevel
	if now-last > int64(time.Second) && c.lastRejectLog.CompareAndSwap(last, now) {
		lvl = zap.WarnLevel
	}
	c.log.Check(lvl, "signal message refused").Write(zap.Stringer("from", from), zap.Error(err), zap.Uint64("refused_total", c.rejected.Load()))
}

// Send seals payload for to and sends it, and returns signal's answer: nil
// when queued for the recipient, a *DeliveryError wrapping ErrNotConnected,
// ErrTooLarge, ErrRateLimited, ErrQueueFull or ErrInvalid when refused,
// ErrDisconnected when this client has no stream. It does not wait for the
// recipient, only for signal (one round trip).
func (c *Client) Send(ctx context.Context, to keys.Key, payload []byte) error {
	s := c.current.Load()
	if s == nil {
		return ErrDisconnected
	}
	if n := len(payload) + seal.Overhead; n > s.maxMessage {
		return &DeliveryError{To: to, Status: signalv1.DeliveryStatus_DELIVERY_STATUS_TOO_LARGE,
			Message: fmt.Sprintf("sealed payload would be %d bytes, the limit is %d", n, s.maxMessage)}
	}
	b, err := c.peers.box(to)
	if err != nil {
		return &DeliveryError{To: to, Status: signalv1.DeliveryStatus_DELIVERY_STATUS_INVALID, Message: err.Error()}
	}
	sealed, nonce := b.SealMessage(payload, c.opts.Now())
	id := c.nextID.Add(1)
	d, err := s.roundTrip(ctx, &signalv1.Envelope{To: to[:], Id: id, Nonce: nonce[:], Sealed: sealed})
	if err != nil {
		return err
	}
	if err := deliveryResult(to, d); err != nil {
		return err
	}
	c.sent.Add(1)
	return nil
}
