// Package signal is the signal server: the rendezvous through which agents
// exchange the sealed messages (ICE credentials and candidates) that let two
// peers find a path to each other. A peer opens one Connect stream, shows
// control's ticket for its WireGuard public key (admit.go), proves that it
// holds the private key, and from then on sends envelopes addressed by
// public key to peers of its account; signal stamps
// the verified sender on each, queues it for the recipient's stream and
// answers every envelope with a Delivery status (queued, not connected, too
// large, rate limited, queue full). Signal never reads a payload (they are
// sealed end to end with internal/seal) and stores nothing.
//
// Forwarding sits behind Router. By default several signal instances share
// routing through a cluster.Cluster (cluster.go): a peer reaches peers
// registered at any instance. LocalRouter is the in-memory core of one
// instance. Only roles/signal and roles/all import it; agents use
// internal/signalclient.
package signal

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"errors"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"go.uber.org/zap"

	signalv1 "meshd/api/signal/v1"
	"meshd/api/signal/v1/signalv1connect"
	"meshd/internal/cluster"
	"meshd/internal/keys"
	"meshd/internal/seal"
	"meshd/internal/server"
)

// Defaults for zero Options fields.
const (
	DefaultMaxMessageBytes   = 16 << 10
	DefaultRatePerSecond     = 500
	DefaultBurst             = 1000
	DefaultQueueLen          = 256
	DefaultHeartbeatInterval = 10 * time.Second
	DefaultRegisterTimeout   = 10 * time.Second
)

// MissedHeartbeats is how many heartbeat intervals a stream may stay silent
// before signal drops it.
const MissedHeartbeats = 3

// Options configure a Server. Zero fields take the defaults above.
type Options struct {
	Log *zap.Logger
	// MaxMessageBytes is the largest sealed payload forwarded; larger ones
	// are answered TOO_LARGE.
	MaxMessageBytes int
	// RatePerSecond and Burst are each peer's token bucket for envelopes;
	// envelopes beyond it are answered RATE_LIMITED.
	RatePerSecond float64
	Burst         int
	// QueueLen is how many envelopes wait for one peer's stream; beyond it
	// senders are answered QUEUE_FULL.
	QueueLen int
	// HeartbeatInterval is how often signal sends a heartbeat and expects
	// one; a stream silent for MissedHeartbeats intervals is dropped.
	HeartbeatInterval time.Duration
	// RegisterTimeout bounds Hello through Register.
	RegisterTimeout time.Duration
	// TicketKey is control's Ed25519 ticket key: a key registers only with
	// a ticket it signed, and envelopes go only between keys of one
	// account. Nil: anyone may register and reach anyone (tests, and
	// signal used on its own); roles/signal and roles/all always set it.
	TicketKey ed25519.PublicKey
	// RegisterRate and RegisterBurst are each source address's token
	// bucket for registration attempts (an IPv6 /64 counts as one source);
	// attempts beyond it are refused with ResourceExhausted.
	RegisterRate  float64
	RegisterBurst int
	// Cluster connects this instance to the other signal instances of the
	// network: keys registered here are present in it, and envelopes for
	// keys registered elsewhere go over its bus. Nil: a cluster of this
	// instance alone (cluster.Local), owned and closed by the Server. A
	// given one is the caller's to close, after the Server.
	Cluster cluster.Cluster
	// Router forwards envelopes; default one over Cluster. A Router set
	// here replaces it (and Cluster is not used).
	Router Router
	// Now is the clock for challenges and rate limits; default time.Now.
	Now func() time.Time
}

func (o Options) withDefaults() Options {
	if o.Log == nil {
		o.Log = zap.NewNop()
	}
	if o.MaxMessageBytes <= 0 {
		o.MaxMessageBytes = DefaultMaxMessageBytes
	}
	if o.RatePerSecond <= 0 {
		o.RatePerSecond = DefaultRatePerSecond
	}
	if o.Burst <= 0 {
		o.Burst = DefaultBurst
	}
	if o.QueueLen <= 0 {
		o.QueueLen = DefaultQueueLen
	}
	if o.HeartbeatInterval <= 0 {
		o.HeartbeatInterval = DefaultHeartbeatInterval
	}
	if o.RegisterTimeout <= 0 {
		o.RegisterTimeout = DefaultRegisterTimeout
	}
	if o.RegisterRate <= 0 {
		o.RegisterRate = DefaultRegisterRate
	}
	if o.RegisterBurst <= 0 {
		o.RegisterBurst = DefaultRegisterBurst
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o
}

// Server is the signal service. Mount it on a server.Server (or serve
// Handler yourself, over HTTP/2), and Close it when done.
type Server struct {
	opts       Options
	log        *zap.Logger
	priv       keys.Private // per process; peers prove their key to it
	pub        keys.Key
	challenger *seal.Challenger
	limits     *limiters
	sources    *sources
	refused    refusals // why keys were last refused

	mu        sync.Mutex
	closed    bool
	closeOnce sync.Once
	streams   map[*stream]struct{}
	wg        sync.WaitGroup // handlers

	stats  counters
	remote remoteCounters
	m      metrics // what Stats does not keep, for Prometheus

	cr         *clusterRouter  // nil when Options.Router was given
	ownCluster cluster.Cluster // made by New, closed by Close
}

// New returns a Server with a fresh Curve25519 key for registration proofs.
func New(opts Options) *Server {
	opts = opts.withDefaults()
	priv, err := keys.Generate()
	if err != nil {
		// crypto/rand does not fail on the systems we run on.
		panic("signal: " + err.Error())
	}
	s := &Server{
		opts:       opts,
		log:        opts.Log,
		priv:       priv,
		pub:        priv.Public(),
		challenger: seal.NewChallenger(opts.RegisterTimeout),
		limits:     newLimiters(opts.RatePerSecond, opts.Burst),
		sources:    newSources(opts.RegisterRate, opts.RegisterBurst),
		streams:    make(map[*stream]struct{}),
	}
	if s.opts.Router == nil {
		if s.opts.Cluster == nil {
			s.ownCluster = cluster.Local()
			s.opts.Cluster = s.ownCluster
		}
		s.cr = newClusterRouter(s.opts.Cluster, s.log, s.opts.Now, &s.remote)
		s.opts.Router = s.cr
	}
	return s
}

// RestorePresence records again every key registered here as present in
// the cluster. Whoever runs this replica's heartbeats calls it when a
// heartbeat succeeds after failing: the cluster may have forgotten this
// replica, and its presence with it, meanwhile.
func (s *Server) RestorePresence() {
	if s.cr != nil {
		s.cr.restore()
	}
}

// ReadMaxBytes is the largest client message a stream accepts before it
// fails: room for an envelope of twice the size limit, so that a modestly
// oversized one still gets its TOO_LARGE answer.
func (s *Server) ReadMaxBytes() int { return 2*s.opts.MaxMessageBytes + 4096 }

// Handler returns the path and handler of the signal service. The handler
// needs HTTP/2 (TLS or h2c), as Connect bidi streams do.
func (s *Server) Handler() (string, http.Handler) {
	path, h := signalv1connect.NewSignalServiceHandler(handler{s},
		connect.WithReadMaxBytes(s.ReadMaxBytes()),
		// Sealed payloads do not compress; gzip would only cost CPU.
		connect.WithCompression("gzip", nil, nil),
	)
	return path, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctl := &streamControl{rc: http.NewResponseController(w)}
		r = r.WithContext(context.WithValue(r.Context(), controlKey{}, ctl))
		if r.Body != nil && r.Body != http.NoBody {
			r.Body = bufferBody(r.Body)
		}
		h.ServeHTTP(w, r)
		ctl.finish() // w is not ours any more once we return
	})
}

// bodyBufferBytes is the read buffer of a stream's request body.
const bodyBufferBytes = 4 << 10

// bufferBody reads a request body through a buffer. Connect reads each
// message in two or more small reads (its 5-byte prefix, then the message),
// and every read of an HTTP/2 request body is a round trip to the
// connection's serve goroutine (for flow control); through a buffer one
// read takes all the frames that have arrived, however many messages they
// hold. A read never waits for more than the body has ready.
func bufferBody(body io.ReadCloser) io.ReadCloser {
	return &bufferedBody{Reader: bufio.NewReaderSize(body, bodyBufferBytes), body: body}
}

type bufferedBody struct {
	*bufio.Reader
	body io.ReadCloser
}

func (b *bufferedBody) Close() error { return b.body.Close() }

// Mount puts the signal service on srv's mux.
func (s *Server) Mount(srv *server.Server) { srv.Handle(s.Handler()) }

// PublicKey returns the key peers prove their keys to.
func (s *Server) PublicKey() keys.Key { return s.pub }

// Close ends every stream (peers see Unavailable and reconnect elsewhere or
// later), refuses new ones, and waits for their handlers to return.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closed = true
	live := make([]*stream, 0, len(s.streams))
	for st := range s.streams {
		live = append(live, st)
	}
	s.mu.Unlock()
	for _, st := range live {
		st.end(errShuttingDown)
	}
	s.wg.Wait()
	s.closeOnce.Do(func() {
		// The streams' detaches have cleared their presence.
		if s.cr != nil {
			s.cr.close()
		}
		if s.ownCluster != nil {
			_ = s.ownCluster.Close()
		}
	})
	return nil
}

// track registers a handler; false when the server is closed.
func (s *Server) track(st *stream) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.streams[st] = struct{}{}
	s.wg.Add(1)
	return true
}

func (s *Server) untrack(st *stream) {
	s.mu.Lock()
	delete(s.streams, st)
	s.mu.Unlock()
	s.wg.Done()
}

// Stats are counters since the server started.
type Stats struct {
	Streams      int // handlers running, registered or not
	Registered   uint64
	Refused      uint64 // failed registrations
	Replaced     uint64
	Queued       uint64
	NotConnected uint64
	TooLarge     uint64
	RateLimited  uint64
	QueueFull    uint64
	Invalid      uint64
	Sent         uint64 // envelopes written to recipients' streams
	// Writes counts stream writes that carried envelopes or answers; with
	// Sent and the answers (Queued+NotConnected+...), it shows how much
	// batching saved.
	Writes uint64
	// Batched counts envelopes that came in a ClientBatch.
	Batched uint64

	// RemoteSent counts envelopes handed to other signal instances,
	// RemoteReceived those that came from them, RemoteDropped those of
	// them whose recipient had left or had a full queue here, and
	// RemoteLost those that could not be published (the cluster's store
	// was unavailable).
	RemoteSent, RemoteReceived, RemoteDropped, RemoteLost uint64

	// TicketRefused and SourceLimited count the registrations refused for
	// a missing, invalid or expired ticket, and for a source over its
	// rate (both are in Refused too).
	TicketRefused, SourceLimited uint64
}

type counters struct {
	registered, refused, replaced, sent, writes, batched atomic.Uint64
	status                                               [7]atomic.Uint64 // by DeliveryStatus

	ticketRefused, sourceLimited atomic.Uint64
}

func (c *counters) count(st signalv1.DeliveryStatus) {
	if int(st) < len(c.status) {
		c.status[st].Add(1)
	}
}

// Stats returns the server's counters.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	n := len(s.streams)
	s.mu.Unlock()
	c := &s.stats
	st := Stats{
		Streams:      n,
		Registered:   c.registered.Load(),
		Refused:      c.refused.Load(),
		Replaced:     c.replaced.Load(),
		Queued:       c.status[signalv1.DeliveryStatus_DELIVERY_STATUS_QUEUED].Load(),
		NotConnected: c.status[signalv1.DeliveryStatus_DELIVERY_STATUS_NOT_CONNECTED].Load(),
		TooLarge:     c.status[signalv1.DeliveryStatus_DELIVERY_STATUS_TOO_LARGE].Load(),
		RateLimited:  c.status[signalv1.DeliveryStatus_DELIVERY_STATUS_RATE_LIMITED].Load(),
		QueueFull:    c.status[signalv1.DeliveryStatus_DELIVERY_STATUS_QUEUE_FULL].Load(),
		Invalid:      c.status[signalv1.DeliveryStatus_DELIVERY_STATUS_INVALID].Load(),
		Sent:         c.sent.Load(),
		Writes:       c.writes.Load(),
		Batched:      c.batched.Load(),
	}
	st.TicketRefused, st.SourceLimited = c.ticketRefused.Load(), c.sourceLimited.Load()
	r := &s.remote
	st.RemoteSent, st.RemoteReceived, st.RemoteDropped, st.RemoteLost = r.sent.Load(), r.received.Load(), r.dropped.Load(), r.lost.Load()
	return st
}

// Errors a stream ends with, as the peer sees them.
var (
	errShuttingDown = connect.NewError(connect.CodeUnavailable, errors.New("signal: server is shutting down; reconnect"))
	errReplaced     = connect.NewError(connect.CodeAborted, errors.New("signal: replaced by a newer stream for the same key (is the key used twice?)"))
)

// handler adapts Server to the generated interface without exporting Connect
// on Server.
type handler struct{ s *Server }

var _ signalv1connect.SignalServiceHandler = handler{}

func (h handler) Connect(ctx context.Context, bs *connect.BidiStream[signalv1.ClientMessage, signalv1.ServerMessage]) error {
	return h.s.serveStream(ctx, bs)
}

// streamControl ends the HTTP/2 stream under a handler: past deadlines make
// a blocked Receive or Send return at once. It is how a stream is dropped
// from outside its own goroutines (replacement, dead peer, shutdown).
// Calls after the handler returned do nothing.
type streamControl struct {
	mu       sync.Mutex
	rc       *http.ResponseController
	finished bool
}

type controlKey struct{}

var past = time.Unix(1, 0)

func (c *streamControl) stopReads() {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.finished {
		_ = c.rc.SetReadDeadline(past)
	}
}

func (c *streamControl) stopWrites() {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.finished {
		_ = c.rc.SetWriteDeadline(past)
	}
}

func (c *streamControl) finish() {
	c.mu.Lock()
	c.finished = true
	c.mu.Unlock()
}
