// Package cluster is what the replicas of one network share besides the
// store's tables: a message bus between replicas, which replicas are alive
// and where, leases so that a periodic job runs once per network, presence
// (which replica holds which peer's stream) and one-time tokens.
//
// Two implementations: Local (one process; `meshd all` on SQLite, and tests
// that run several replicas in one process on one Local) and the PostgreSQL
// one in store/pgcluster (LISTEN/NOTIFY and tables of the store's
// migrations). Only internal/control, internal/signal, store/pgcluster and
// roles/ import it.
package cluster

import (
	"context"
	"errors"
	"time"
)

// ErrUnavailable wraps every error that comes from losing the shared
// database: callers say "store unavailable" and keep serving what they hold.
var ErrUnavailable = errors.New("store unavailable")

// MaxPayload is the largest payload Publish accepts (PostgreSQL's NOTIFY
// takes 8,000 bytes of text: base64 of 5,000 bytes and the framing fit).
const MaxPayload = 5000

// ErrTooLarge is returned by Publish for a payload above MaxPayload.
var ErrTooLarge = errors.New("cluster: payload too large")

// Replica is one running control/signal process of the network.
type Replica struct {
	ID        string    // random per process start
	PublicURL string    // control's --public-url ("" for a signal-only process)
	SignalURL string    // its signal's URL, if it runs one
	RelayURLs []string  // its relays' URLs, if it runs any
	Version   string    // meshd version (for `admin server status`)
	Started   time.Time // process start
	Seen      time.Time // last heartbeat (set by the implementation)
}

// Cluster is shared by the replicas of one network. Every method is safe
// for concurrent use. Errors caused by the shared database wrap
// ErrUnavailable.
type Cluster interface {
	// Self is this replica's ID.
	Self() string

	// Publish sends payload on channel to every subscriber of every live
	// replica, this one included. Delivery is in order per publisher, at
	// most once.
	Publish(ctx context.Context, channel string, payload []byte) error
	// Subscribe delivers what is published on channel until ctx ends (the
	// channel is then closed). A nil payload means messages may have been
	// lost (a reconnect to the database): the subscriber must resync from
	// the store. A slow subscriber loses messages and gets a nil payload
	// too, right after the last message it got (so it learns of the loss
	// even when nothing follows); it never blocks the publisher.
	Subscribe(ctx context.Context, channel string) (<-chan []byte, error)

	// Heartbeat records r (with r.ID = Self()) as alive now and returns
	// every replica seen within ttl, this one included, oldest Started
	// first. Replicas not seen for ttl are forgotten, and so is every
	// presence they held.
	Heartbeat(ctx context.Context, r Replica, ttl time.Duration) ([]Replica, error)

	// Lead returns whether this replica holds the lease name for the next
	// ttl: it takes the lease when it is free or expired and renews it
	// when it holds it already. A job that runs only while Lead says true
	// runs on one replica at a time.
	Lead(ctx context.Context, name string, ttl time.Duration) (bool, error)

	// SetPresent records (present=true) or clears key on this replica: a
	// peer whose stream this replica serves ("peer:ID"), a key registered
	// at this replica's signal ("signal:KEY").
	SetPresent(ctx context.Context, key string, present bool) error
	// Present returns the live replicas (IDs) where key is present,
	// this one included.
	Present(ctx context.Context, key string) ([]string, error)
	// PresentWithPrefix returns every key with prefix present on a live
	// replica (for control's start: which peers are online elsewhere).
	PresentWithPrefix(ctx context.Context, prefix string) ([]string, error)

	// PutOnce stores a one-time token (a key-proof challenge) until exp.
	PutOnce(ctx context.Context, token string, exp time.Time) error
	// TakeOnce removes token and reports whether it existed and had not
	// expired at now: true on exactly one replica, once.
	TakeOnce(ctx context.Context, token string, now time.Time) (bool, error)

	// Close releases this replica's presence, leases and listeners.
	Close() error
}
