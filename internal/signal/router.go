package signal

import (
	"context"
	"sync"

	signalv1 "meshd/api/signal/v1"
	"meshd/internal/keys"
)

// Router is the forwarding core: it knows which peers have a registered
// stream and hands envelopes to them. LocalRouter keeps that in memory for
// one signal instance; a router shared by several instances would hand an
// envelope for a peer it does not hold to the instance that does, behind the
// same two methods.
type Router interface {
	// Attach makes m the mailbox of key, a peer of account (from its
	// ticket; "" when signal runs without tickets). A mailbox attached
	// earlier for key is told Replaced, after m became current, so that
	// from then on no envelope reaches the old one. detach removes m if it
	// is still the mailbox of key; it is idempotent.
	Attach(key keys.Key, account string, m Mailbox) (detach func())
	// Route hands env (whose From signal has already set to the verified
	// sender, a peer of account) to the mailbox of to, and answers QUEUED,
	// NOT_CONNECTED or QUEUE_FULL. A recipient of another account is
	// NOT_CONNECTED: a peer reaches only peers of its own account, and
	// learns nothing about the others. It never waits for the recipient.
	// Envelopes routed one after the other by one caller reach the mailbox
	// in that order.
	Route(ctx context.Context, account string, to keys.Key, env *signalv1.Envelope) signalv1.DeliveryStatus
}

// Mailbox is the receiving end of one peer's stream.
type Mailbox interface {
	// Offer queues env for the peer without blocking: QUEUED, QUEUE_FULL
	// when the peer's queue is full, NOT_CONNECTED when its stream has
	// ended.
	Offer(env *signalv1.Envelope) signalv1.DeliveryStatus
	// Replaced tells the mailbox that a newer stream took over its key. It
	// must not block.
	Replaced()
}

// LocalRouter is a Router in memory, for the streams of one process.
type LocalRouter struct {
	mu    sync.RWMutex
	peers map[keys.Key]routed
}

type routed struct {
	m       Mailbox
	account string
}

var _ Router = (*LocalRouter)(nil)

// NewLocalRouter returns an empty LocalRouter.
func NewLocalRouter() *LocalRouter {
	return &LocalRouter{peers: make(map[keys.Key]routed)}
}

// Attach implements Router.
func (r *LocalRouter) Attach(key keys.Key, account string, m Mailbox) (detach func()) {
	r.mu.Lock()
	old := r.peers[key].m
	r.peers[key] = routed{m: m, account: account}
	r.mu.Unlock()
	if old != nil && old != m {
		old.Replaced()
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			r.mu.Lock()
			if r.peers[key].m == m {
				delete(r.peers, key)
			}
			r.mu.Unlock()
		})
	}
}

// Route implements Router. The offer happens under the read lock, so that
// once Attach has returned no envelope goes to a replaced mailbox.
func (r *LocalRouter) Route(_ context.Context, account string, to keys.Key, env *signalv1.Envelope) signalv1.DeliveryStatus {
	r.mu.RLock()
	defer r.mu.RUnlock()
	p := r.peers[to]
	if p.m == nil || p.account != account {
		return signalv1.DeliveryStatus_DELIVERY_STATUS_NOT_CONNECTED
	}
	return p.m.Offer(env)
}

// replace ends the mailbox of key if it is of account: a newer stream for
// the key registered at another instance.
func (r *LocalRouter) replace(key keys.Key, account string) {
	r.mu.Lock()
	p := r.peers[key]
	if p.m == nil || p.account != account {
		r.mu.Unlock()
		return
	}
	delete(r.peers, key)
	r.mu.Unlock()
	p.m.Replaced()
}

// Len returns how many peers have a mailbox.
func (r *LocalRouter) Len() int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return len(r.peers)
}
