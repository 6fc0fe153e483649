package signal

import (
	"context"
	"encoding/binary"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	signalv1 "meshd/api/signal/v1"
	"meshd/internal/cluster"
	"meshd/internal/keys"
	"meshd/internal/seal"
)

// Several signal instances form one signal service through a
// cluster.Cluster: a key registered at an instance is present there
// (presence "signal:KEY:ACCOUNT", so that a peer learns nothing about
// keys of other accounts), and an envelope for a key that is not local
// goes over the bus to the channel of every instance where the key is
// present, which hands it to its local stream.
//
// The sender's instance does every check (size, format, the sender's rate)
// before anything reaches the bus: an instance trusts what another one
// published, so the bus is no way around the per-sender limits. The
// recipient's queue is still bounded where the recipient is.
//
// Across instances, QUEUED means handed to the instance that holds the
// recipient: when its stream ended or its queue filled meanwhile, that
// instance drops the envelope and counts it (Stats.RemoteDropped), as
// envelopes queued for a stream that ends are lost on one instance too.
//
// Lookups do not reach the shared store for every envelope: where a key is
// present is cached for cacheTTL, and every instance announces on one
// channel when a key becomes present or absent there, so that the others
// drop what they cached about it at once. A key that registers at another
// instance also replaces the older stream here, as a second stream for one
// key does on one instance. Envelopes for one instance are packed into one
// Publish each, up to cluster.MaxPayload, by one goroutine per destination:
// whatever arrives while a Publish is under way goes in the next one, so
// nothing waits when idle and the bus carries full payloads under load.

// Tuning of the cluster router.
const (
	// cacheTTL bounds how long a lookup is trusted without an
	// announcement: it matters only when an instance dies (its presence
	// goes after the cluster's heartbeat ttl) or announcements are lost.
	cacheTTL = 2 * time.Second
	// maxCache bounds the cache; past it, expired entries are swept, then
	// everything is dropped.
	maxCache = 1 << 16
	// maxOutFrames bounds the payloads waiting for one destination; beyond
	// them senders are answered QUEUE_FULL.
	maxOutFrames = 256
	// storeTimeout bounds one call to the cluster.
	storeTimeout = 5 * time.Second
	// linkIdle is how long a destination's goroutine outlives its last
	// payload (replica IDs change at every restart).
	linkIdle = time.Minute
	// retryEvery is how often presence that could not be written is
	// written again.
	retryEvery = time.Second
)

// Records in a bus payload: a version byte, then records one after another.
const (
	frameVersion = 1
	recEnvelope  = 'E' // account, from, to, id, nonce, sealed
	recAttached  = 'A' // origin, key, account: present at origin now
	recDetached  = 'D' // origin, key, account: no longer present at origin
)

// maxRecordOverhead is what an envelope record adds to its sealed payload
// at most: type, account (one length byte, up to 255 bytes as tickets
// allow), from, to, id, nonce and the payload's length.
const maxRecordOverhead = 1 + 1 + 255 + keys.Len + keys.Len + 8 + seal.NonceLen + binary.MaxVarintLen32

// MaxRemoteMessageBytes is the largest sealed payload that reaches a peer
// registered at another signal instance: one envelope must fit one bus
// payload. Larger ones are answered TOO_LARGE when the recipient is
// elsewhere (signal's own limit, Options.MaxMessageBytes, is larger by
// default; offers and candidates are far smaller than either).
const MaxRemoteMessageBytes = cluster.MaxPayload - 1 - maxRecordOverhead

// Bus channels of the signal instances.
const (
	announceChannel = "signal-presence"
	presencePrefix  = "signal:"
)

func instanceChannel(replicaID string) string { return "signal:" + replicaID }

// PresenceKey is the presence a registered key holds in the cluster.
func PresenceKey(key keys.Key, account string) string {
	return presencePrefix + key.String() + ":" + account
}

// remoteCounters count what crossed the bus (see Stats).
type remoteCounters struct {
	sent, received, dropped, lost atomic.Uint64
}

// clusterRouter is a Router over a LocalRouter and a cluster.Cluster.
type clusterRouter struct {
	local *LocalRouter
	c     cluster.Cluster
	self  string
	log   *zap.Logger
	now   func() time.Time
	stats *remoteCounters

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	stripes [64]presenceStripe

	cacheMu sync.RWMutex
	cache   map[string]cached

	linksMu sync.Mutex
	links   map[string]*outlink

	retryMu sync.Mutex
	retry   map[string]bool // presence keys whose write failed

	// downUntil (Unix ns): after a failed call, registrations and lookups
	// do not wait on the store until then; presence waits in retry.
	downUntil atomic.Int64

	logMu   sync.Mutex
	lastLog time.Time
}

// presenceStripe serializes the presence writes of the keys that hash to
// it, so that the last write of a key is the one its count asks for.
type presenceStripe struct {
	mu sync.Mutex
	n  map[string]int // presence key → mailboxes attached here
}

type cached struct {
	ids   []string // other instances where the key is present
	until time.Time
}

var _ Router = (*clusterRouter)(nil)

// newClusterRouter subscribes to this instance's channel and the
// announcements; when the first subscription fails it retries in the
// background (meanwhile nothing reaches this instance from others).
func newClusterRouter(c cluster.Cluster, log *zap.Logger, now func() time.Time, stats *remoteCounters) *clusterRouter {
	ctx, cancel := context.WithCancel(context.Background())
	r := &clusterRouter{
		local: NewLocalRouter(), c: c, self: c.Self(), log: log.Named("cluster"), now: now, stats: stats,
		ctx: ctx, cancel: cancel, cache: make(map[string]cached), links: make(map[string]*outlink), retry: make(map[string]bool),
	}
	for i := range r.stripes {
		r.stripes[i].n = make(map[string]int)
	}
	for _, ch := range []string{instanceChannel(r.self), announceChannel} {
		sub, err := c.Subscribe(ctx, ch)
		if err != nil {
			r.log.Warn("cannot subscribe to the cluster bus yet; retrying", zap.String("channel", ch), zap.Error(err))
		}
		r.wg.Go(func() { r.listen(ch, sub) })
	}
	r.wg.Go(r.retryLoop)
	r.link(announceChannel) // used by every registration: it stays
	return r
}

// close stops the router's goroutines; presence goes with the streams'
// detaches, or with the cluster's Close.
func (r *clusterRouter) close() {
	r.cancel()
	r.wg.Wait()
}

// Attach implements Router: the key becomes present here before Attach
// returns, so that other instances reach it as soon as it is registered.
func (r *clusterRouter) Attach(key keys.Key, account string, m Mailbox) (detach func()) {
	detachLocal := r.local.Attach(key, account, m)
	pk := PresenceKey(key, account)
	r.hold(key, account, pk, 1)
	var once sync.Once
	return func() {
		once.Do(func() {
			detachLocal()
			r.hold(key, account, pk, -1)
		})
	}
}

// hold counts a mailbox of pk in (d=1) or out (d=-1), and writes presence
// when the count leaves or reaches zero.
func (r *clusterRouter) hold(key keys.Key, account, pk string, d int) {
	s := &r.stripes[stripeOf(pk)]
	s.mu.Lock()
	defer s.mu.Unlock()
	n := s.n[pk] + d
	if n <= 0 {
		delete(s.n, pk)
	} else {
		s.n[pk] = n
	}
	if (d > 0 && n == 1) || (d < 0 && n <= 0) {
		_ = r.writePresence(pk, n > 0, false)
		typ := byte(recDetached)
		if n > 0 {
			typ = recAttached
		}
		r.announce(typ, key, account)
	}
}

func stripeOf(pk string) int {
	h := uint32(2166136261)
	for i := 0; i < len(pk); i++ {
		h = (h ^ uint32(pk[i])) * 16777619
	}
	return int(h % 64)
}

// storeDown reports whether a call to the cluster failed within the last
// retryEvery: a store that is down would otherwise hold every
// registration and lookup for storeTimeout.
func (r *clusterRouter) storeDown() bool { return time.Now().UnixNano() < r.downUntil.Load() }

func (r *clusterRouter) storeFailed() { r.downUntil.Store(time.Now().Add(retryEvery).UnixNano()) }

// writePresence writes pk's presence; a failure is retried by retryLoop,
// and so is a write while the store is down unless probe. The caller
// holds pk's stripe.
func (r *clusterRouter) writePresence(pk string, present, probe bool) error {
	var err error
	if !probe && r.storeDown() {
		err = cluster.ErrUnavailable
	} else {
		ctx, cancel := context.WithTimeout(r.ctx, storeTimeout)
		err = r.c.SetPresent(ctx, pk, present)
		cancel()
		if err != nil && r.ctx.Err() == nil {
			r.storeFailed()
		}
	}
	r.retryMu.Lock()
	if err != nil {
		r.retry[pk] = true
	} else {
		delete(r.retry, pk)
	}
	r.retryMu.Unlock()
	if err != nil {
		r.warn("cannot record a key's presence; retrying", err)
	}
	return err
}

// retryLoop writes again the presence that could not be written.
func (r *clusterRouter) retryLoop() {
	t := time.NewTicker(retryEvery)
	defer t.Stop()
	for {
		select {
		case <-r.ctx.Done():
			return
		case <-t.C:
		}
		r.retryMu.Lock()
		pks := make([]string, 0, len(r.retry))
		for pk := range r.retry {
			pks = append(pks, pk)
		}
		r.retryMu.Unlock()
		if len(pks) == 0 {
			continue
		}
		// Probe with a read first, holding no stripe: registrations do
		// not wait on a store that still does not answer.
		ctx, cancel := context.WithTimeout(r.ctx, storeTimeout)
		_, err := r.c.Present(ctx, presencePrefix+"probe")
		cancel()
		if err != nil {
			if r.ctx.Err() == nil {
				r.storeFailed()
			}
			continue
		}
		for _, pk := range pks {
			s := &r.stripes[stripeOf(pk)]
			s.mu.Lock()
			err := r.writePresence(pk, s.n[pk] > 0, true)
			s.mu.Unlock()
			if err != nil {
				break // still down: the rest waits for the next round
			}
		}
	}
}

// restore writes the presence of every key registered here again: after
// the cluster forgot this instance (its heartbeats failed for the ttl), it
// forgot its presence too.
func (r *clusterRouter) restore() {
	probe := true // until a write fails: then the rest go to retry at once
	for i := range r.stripes {
		s := &r.stripes[i]
		s.mu.Lock()
		for pk := range s.n {
			if r.writePresence(pk, true, probe) != nil {
				probe = false
			}
		}
		s.mu.Unlock()
	}
}

// Route implements Router: a local recipient first (one instance is as
// fast as without a cluster), then wherever the cluster says the key is.
func (r *clusterRouter) Route(ctx context.Context, account string, to keys.Key, env *signalv1.Envelope) signalv1.DeliveryStatus {
	status := r.local.Route(ctx, account, to, env)
	if status != signalv1.DeliveryStatus_DELIVERY_STATUS_NOT_CONNECTED {
		return status
	}
	ids := r.where(ctx, PresenceKey(to, account))
	if len(ids) == 0 {
		return status
	}
	if len(env.Sealed) > MaxRemoteMessageBytes || len(account) > 255 {
		return signalv1.DeliveryStatus_DELIVERY_STATUS_TOO_LARGE
	}
	rec := appendEnvelope(make([]byte, 0, maxRecordOverhead+len(env.Sealed)), account, env)
	status = signalv1.DeliveryStatus_DELIVERY_STATUS_QUEUE_FULL
	for _, id := range ids {
		if r.send(instanceChannel(id), rec) {
			status = signalv1.DeliveryStatus_DELIVERY_STATUS_QUEUED
		}
	}
	if status == signalv1.DeliveryStatus_DELIVERY_STATUS_QUEUED {
		r.stats.sent.Add(1)
	}
	return status
}

// where returns the other live instances where pk is present, from the
// cache when it is fresh. When the cluster cannot be asked, what was known
// last is used.
func (r *clusterRouter) where(ctx context.Context, pk string) []string {
	now := r.now()
	r.cacheMu.RLock()
	c, ok := r.cache[pk]
	r.cacheMu.RUnlock()
	if ok && now.Before(c.until) {
		return c.ids
	}
	if r.storeDown() {
		return c.ids
	}
	lctx, cancel := context.WithTimeout(ctx, storeTimeout)
	ids, err := r.c.Present(lctx, pk)
	cancel()
	if err != nil {
		if ctx.Err() == nil && r.ctx.Err() == nil {
			r.storeFailed()
			r.warn("cannot look up where a key is present", err)
		}
		return c.ids
	}
	others := make([]string, 0, len(ids))
	for _, id := range ids {
		if id != r.self {
			others = append(others, id)
		}
	}
	r.cacheMu.Lock()
	if len(r.cache) >= maxCache {
		for k, e := range r.cache {
			if !now.Before(e.until) {
				delete(r.cache, k)
			}
		}
		if len(r.cache) >= maxCache {
			clear(r.cache)
		}
	}
	r.cache[pk] = cached{ids: others, until: now.Add(cacheTTL)}
	r.cacheMu.Unlock()
	return others
}

func (r *clusterRouter) forget(pk string) {
	r.cacheMu.Lock()
	delete(r.cache, pk)
	r.cacheMu.Unlock()
}

func (r *clusterRouter) forgetAll() {
	r.cacheMu.Lock()
	clear(r.cache)
	r.cacheMu.Unlock()
}

// announce tells every instance that key became present or absent here.
func (r *clusterRouter) announce(typ byte, key keys.Key, account string) {
	if len(account) > 255 {
		return // not routable across instances either
	}
	rec := make([]byte, 0, 3+len(r.self)+keys.Len+len(account))
	rec = append(rec, typ, byte(len(r.self)))
	rec = append(rec, r.self...)
	rec = append(rec, key[:]...)
	rec = append(rec, byte(len(account)))
	rec = append(rec, account...)
	if !r.send(announceChannel, rec) {
		// Others notice when their cache expires.
		r.warn("announcements are not getting out", errors.New("queue full"))
	}
}

// appendEnvelope appends env's record for account.
func appendEnvelope(b []byte, account string, env *signalv1.Envelope) []byte {
	b = append(b, recEnvelope, byte(len(account)))
	b = append(b, account...)
	b = append(b, env.From...)
	b = append(b, env.To...)
	b = binary.BigEndian.AppendUint64(b, env.Id)
	b = append(b, env.Nonce...)
	b = binary.AppendUvarint(b, uint64(len(env.Sealed)))
	return append(b, env.Sealed...)
}

// warn logs err at most once a second: a store that is down would
// otherwise log once per envelope.
func (r *clusterRouter) warn(msg string, err error) {
	now := time.Now()
	r.logMu.Lock()
	quiet := now.Sub(r.lastLog) < time.Second
	if !quiet {
		r.lastLog = now
	}
	r.logMu.Unlock()
	if !quiet {
		r.log.Warn(msg, zap.Error(err))
	}
}
