// Package controlclient is the agent's side of control: it proves the
// peer's key, logs in (with a setup key to join) and keeps a Sync stream
// open, handing each newer network map to the agent. Only internal/agent and
// internal/control/controltest (its fake agents) import it.
package controlclient

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"runtime"
	"slices"
	"sync"
	"time"

	"connectrpc.com/connect"
	"go.uber.org/zap"
	"google.golang.org/protobuf/reflect/protoreflect"

	controlv1 "meshd/api/control/v1"
	"meshd/api/control/v1/controlv1connect"
	"meshd/internal/backoff"
	"meshd/internal/keys"
	"meshd/internal/seal"
	"meshd/internal/version"
)

// Defaults of Options.
const (
	DefaultHeartbeatTimeout = 45 * time.Second // three missed heartbeats
	DefaultMinBackoff       = time.Second
	DefaultMaxBackoff       = time.Minute
	// DefaultStableAfter is how long a stream that delivered a map must have
	// lived for its end to count as the loss of a working stream (a server
	// restart, most often): the reconnect waits then stay short for a while
	// (internal/backoff). A stream that drops sooner is retried with the
	// waits starting from MinBackoff, without that cap.
	DefaultStableAfter = 10 * time.Second
)

// Meta describes the machine; empty fields are filled from the system.
type Meta struct {
	Hostname string
	OS       string
	Version  string
	// PostQuantum: the agent takes part in post-quantum pre-shared key
	// exchanges (control tells its peers so).
	PostQuantum bool
}

// Options configure a Client.
type Options struct {
	// URL of control (https://host:port, or http:// for an --insecure lab),
	// the first replica tried.
	URL string
	// URLs are the other replicas of the same control (sharing its store
	// and certificate). Login and Sync move to the next one when the one
	// in use fails; the control_urls of each map replace them, URL staying
	// in the list.
	URLs []string
	// Pin of control's certificate ("sha256:HEX"); empty: system roots.
	Pin     string
	Private keys.Private
	Meta    Meta
	Log     *zap.Logger
	// HTTPClient to use instead of one made by rpcclient (tests).
	HTTPClient *http.Client

	// HeartbeatTimeout: a stream silent for this long is dead.
	HeartbeatTimeout time.Duration
	// Reconnect backoff bounds; each wait is jittered. After a stream
	// that had worked, waits stay within RecoverBackoff (default
	// backoff.DefaultRecoverMax) for a while, whatever MaxBackoff is.
	MinBackoff, MaxBackoff time.Duration
	RecoverBackoff         time.Duration
	// StableAfter is how long a stream must have lived for its end to
	// count as the loss of a working one; zero: DefaultStableAfter.
	StableAfter time.Duration
	// FullMapsOnly: do not ask control for map updates, as agents before
	// them did (tests and benchmarks compare the two).
	FullMapsOnly bool
}

// Stats counts what Sync received.
type Stats struct {
	Maps    uint64 // full maps handed to onMap
	Updates uint64 // updates applied (each handed to onMap as a full map)
	// Resyncs: streams dropped because an update did not fit the map held.
	Resyncs uint64
}

// Client talks to control for one peer. Login and Sync may be called
// concurrently.
type Client struct {
	opts Options
	log  *zap.Logger
	pub  keys.Key
	meta *controlv1.PeerMeta

	mu    sync.Mutex
	held  *controlv1.NetworkMap // the newest map handed to onMap: the base of updates
	stats Stats
	urls  []string // every known replica, in the order they are tried
	cur   string   // the replica in use
	rpcs  map[string]controlv1connect.ControlServiceClient
}

// New returns a client; it does not connect yet.
func New(opts Options) (*Client, error) {
	if opts.Private.IsZero() {
		return nil, errors.New("controlclient: no private key")
	}
	if opts.Log == nil {
		opts.Log = zap.NewNop()
	}
	if opts.HeartbeatTimeout <= 0 {
		opts.HeartbeatTimeout = DefaultHeartbeatTimeout
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
	m := opts.Meta
	if m.Hostname == "" {
		m.Hostname, _ = os.Hostname()
	}
	if m.OS == "" {
		m.OS = runtime.GOOS
	}
	if m.Version == "" {
		m.Version = version.String()
	}
	c := &Client{
		opts: opts,
		log:  opts.Log,
		pub:  opts.Private.Public(),
		meta: &controlv1.PeerMeta{Hostname: m.Hostname, Os: m.OS, Version: m.Version, PostQuantum: m.PostQuantum},
		cur:  opts.URL,
		rpcs: make(map[string]controlv1connect.ControlServiceClient),
	}
	c.setURLsLocked(opts.URLs)
	// A bad first URL is the caller's mistake: say so now. Other URLs
	// (from maps) are checked when they are tried.
	if _, err := c.rpcFor(opts.URL); err != nil {
		return nil, err
	}
	return c, nil
}

// PublicKey is the peer's public key.
func (c *Client) PublicKey() keys.Key { return c.pub }

// Serial is the serial of the newest map handed to onMap (0: none yet).
func (c *Client) Serial() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.held.GetSerial()
}

// Stats returns what Sync received so far.
func (c *Client) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stats
}

// prove fetches a challenge and proves the peer's key for purpose.
func (c *Client) prove(ctx context.Context, rpc controlv1connect.ControlServiceClient, purpose string) (*controlv1.Proof, error) {
	resp, err := rpc.Challenge(ctx, connect.NewRequest(&controlv1.ChallengeRequest{}))
	if err != nil {
		return nil, fmt.Errorf("challenge: %w", err)
	}
	server, err := keys.FromBytes(resp.Msg.ServerPublicKey)
	if err != nil {
		return nil, fmt.Errorf("challenge: control's key: %w", err)
	}
	nonce, sealed, err := seal.Prove(purpose, resp.Msg.Challenge, server, c.opts.Private)
	if err != nil {
		return nil, fmt.Errorf("challenge: control's key: %w", err)
	}
	return &controlv1.Proof{PublicKey: c.pub[:], Challenge: resp.Msg.Challenge, Nonce: nonce[:], Sealed: sealed}, nil
}

// Login registers the peer (setupKey needed for a new peer and after the
// login expired) and returns its configuration. Refusals wrap the ErrX
// values of this package. A replica that does not answer is passed over
// for the next (each is tried once); the error is then the first
// replica's.
func (c *Client) Login(ctx context.Context, setupKey string) (*controlv1.SelfConfig, error) {
	var first error
	for range c.URLs() {
		url := c.URL()
		self, err := c.loginAt(ctx, url, setupKey)
		var re *RefusedError
		if err == nil || ctx.Err() != nil || errors.As(err, &re) {
			return self, err
		}
		if first == nil {
			first = err
		}
		if next := c.advance(url); next != url {
			c.log.Info("login: control does not answer; trying another replica", zap.String("url", url), zap.String("next", next), zap.Error(err))
		}
	}
	return nil, first
}

func (c *Client) loginAt(ctx context.Context, url, setupKey string) (*controlv1.SelfConfig, error) {
	rpc, err := c.rpcFor(url)
	if err != nil {
		return nil, fmt.Errorf("login: %w", err)
	}
	proof, err := c.prove(ctx, rpc, seal.PurposeLogin)
	if err != nil {
		return nil, fmt.Errorf("login: %w", err)
	}
	resp, err := rpc.Login(ctx, connect.NewRequest(&controlv1.LoginRequest{Proof: proof, SetupKey: setupKey, Meta: c.meta}))
	if err != nil {
		return nil, refusedOr(err, "login")
	}
	return resp.Msg.Self, nil
}

// refusedOr returns a refusal as it is (its message is for the user) and
// other errors with context.
func refusedOr(err error, what string) error {
	if r := refused(err); r != err {
		return r
	}
	return fmt.Errorf("%s: %w", what, err)
}

// Sync keeps a map stream open until ctx ends, reconnecting with jittered
// exponential backoff, each time to the next replica (Options.URLs) when
// there are several. onMap gets every map newer than the last one it got
// (older or repeated serials are dropped), always whole: the client applies
// control's map updates to the map it holds and hands over the result. onMap
// must not modify the maps it gets (the next update is built on them).
// An update that does not fit the map held (another base serial, an entry
// the map does not list) is never guessed at: the client drops the stream
// and opens a new one, which starts with a full map. onState (may be nil)
// hears when the stream is up (connected, nil) and when it drops (false,
// why). Sync returns ctx.Err() when ctx ends, or a refusal that retrying
// cannot fix: ErrPeerUnknown (deleted), ErrLoginExpired, ErrProofFailed.
func (c *Client) Sync(ctx context.Context, onMap func(*controlv1.NetworkMap), onState func(connected bool, err error)) error {
	if onState == nil {
		onState = func(bool, error) {}
	}
	b := backoff.Backoff{Min: c.opts.MinBackoff, Max: c.opts.MaxBackoff, RecoverMax: c.opts.RecoverBackoff}
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	resynced := false
	for {
		began := time.Now()
		url := c.URL()
		healthy, err := c.syncOnce(ctx, url, onMap, onState)
		if ctx.Err() != nil {
			onState(false, ctx.Err())
			return ctx.Err()
		}
		if permanent(err) {
			onState(false, err)
			return err
		}
		onState(false, err)
		switch {
		case healthy && time.Since(began) >= c.opts.StableAfter:
			b.Lost(time.Now())
		case healthy:
			b.Reset()
		}
		if errors.Is(err, errResync) && !resynced {
			resynced = true // at once, but not twice in a row
			continue
		}
		resynced = false
		next := c.advance(url)
		wait := b.Next(time.Now())
		c.log.Debug("sync: reconnecting", zap.String("url", next), zap.Duration("in", wait), zap.Error(err))
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			onState(false, ctx.Err())
			return ctx.Err()
		case <-timer.C:
		}
	}
}

// syncOnce runs one stream; healthy is true when it delivered a map.
func (c *Client) syncOnce(ctx context.Context, url string, onMap func(*controlv1.NetworkMap), onState func(bool, error)) (healthy bool, err error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	rpc, err := c.rpcFor(url)
	if err != nil {
		return false, fmt.Errorf("sync: %w", err)
	}
	proof, err := c.prove(ctx, rpc, seal.PurposeSync)
	if err != nil {
		return false, refusedOr(err, "sync")
	}
	stream, err := rpc.Sync(ctx, connect.NewRequest(&controlv1.SyncRequest{Proof: proof, Meta: c.meta, KnownSerial: c.Serial(),
		AcceptUpdates: !c.opts.FullMapsOnly}))
	if err != nil {
		return false, refusedOr(err, "sync")
	}
	defer stream.Close()
	// A stream silent for longer than the timeout is dead (a half-open
	// connection, a hung control): cancel it so that Receive returns.
	watchdog := time.AfterFunc(c.opts.HeartbeatTimeout, func() { cancel(ErrNoHeartbeat) })
	defer watchdog.Stop()
	for stream.Receive() {
		watchdog.Reset(c.opts.HeartbeatTimeout)
		msg := stream.Msg()
		if msg.Map == nil && msg.Update == nil {
			continue // heartbeat
		}
		if !healthy {
			healthy = true
			onState(true, nil)
		}
		m, err := c.accept(msg)
		if err != nil {
			c.log.Info("sync: resyncing", zap.Error(err))
			return healthy, err
		}
		if m != nil {
			onMap(m)
		}
	}
	err = stream.Err()
	if cause := context.Cause(ctx); errors.Is(cause, ErrNoHeartbeat) {
		err = fmt.Errorf("sync: %w for %s", ErrNoHeartbeat, c.opts.HeartbeatTimeout)
	} else if err == nil {
		err = errors.New("sync: control closed the stream")
	} else {
		err = refusedOr(err, "sync")
	}
	return healthy, err
}

// errResync: an update did not fit the map held; a new stream starts over
// with a full map.
var errResync = errors.New("sync: resync")

// accept takes a map or an update from the stream and returns the map to
// hand to onMap: nil when it is not newer than the one held, an error
// wrapping errResync when an update does not fit the map held.
func (c *Client) accept(msg *controlv1.SyncResponse) (*controlv1.NetworkMap, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	m, u := msg.Map, msg.Update
	serial := m.GetSerial()
	if m == nil {
		serial = u.Serial
	}
	if serial <= c.held.GetSerial() {
		c.log.Debug("sync: dropped an older map", zap.Uint64("serial", serial), zap.Uint64("held", c.held.GetSerial()))
		return nil, nil
	}
	if m == nil {
		var err error
		if m, err = apply(c.held, u); err != nil {
			c.stats.Resyncs++
			return nil, fmt.Errorf("%w: update %d: %w", errResync, u.Serial, err)
		}
		c.stats.Updates++
	} else {
		c.stats.Maps++
		if len(m.ControlUrls) > 0 {
			c.setURLsLocked(m.ControlUrls)
		}
	}
	c.held = m
	return m, nil
}

// apply returns the map that update u makes of base, leaving base as it is
// (the result shares everything but its peer list with base).
func apply(base *controlv1.NetworkMap, u *controlv1.MapUpdate) (*controlv1.NetworkMap, error) {
	if base == nil || base.Serial != u.BaseSerial {
		return nil, fmt.Errorf("base %d, held %d", u.BaseSerial, base.GetSerial())
	}
	// One pass over the base's peers, looking up the few keys the update
	// names (not a map of every peer).
	upsert := make(map[string]*controlv1.RemotePeer, len(u.UpsertPeers))
	for _, p := range u.UpsertPeers {
		upsert[p.PublicKey] = p
	}
	gone := make(map[string]bool, len(u.RemovedPeerKeys))
	for _, k := range u.RemovedPeerKeys {
		gone[k] = true
	}
	peers := make([]*controlv1.RemotePeer, 0, len(base.Peers))
	found := 0
	for _, p := range base.Peers {
		if q, ok := upsert[p.PublicKey]; ok {
			p = q
			found++
		}
		if !gone[p.PublicKey] {
			peers = append(peers, p)
		}
	}
	if found != len(upsert) {
		for k := range upsert {
			if !slices.ContainsFunc(base.Peers, func(p *controlv1.RemotePeer) bool { return p.PublicKey == k }) {
				return nil, fmt.Errorf("peer %s is not in map %d", k, base.Serial)
			}
		}
		return nil, fmt.Errorf("map %d lists a peer twice", base.Serial)
	}
	// A shallow copy of every field base has, whatever fields the map
	// gains later; then the new serial and peers.
	m := &controlv1.NetworkMap{}
	dst := m.ProtoReflect()
	base.ProtoReflect().Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		dst.Set(fd, v)
		return true
	})
	m.Serial, m.Peers = u.Serial, peers
	return m, nil
}
