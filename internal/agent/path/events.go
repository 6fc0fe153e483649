package path

import (
	"net/netip"
	"time"
)

// The events a Machine steps on (Machine.Step).

// Event is something that happened. Every event carries its time.
type Event interface{ at() time.Time }

// Started begins the machine's life: the peer appeared in the map.
type Started struct{ At time.Time }

// SessionStarted: a session of Kind now runs under id Session (the
// controlling peer created it, or the controlled peer accepted an offer).
type SessionStarted struct {
	At      time.Time
	Kind    Kind
	Session uint64
}

// SessionChanged: the session's ICE state changed. Events for a session that
// is not the current one of its kind are ignored.
type SessionChanged struct {
	At      time.Time
	Kind    Kind
	Session uint64
	State   SessionState
	Pair    Pair // set when State is Connected
}

// Tick is a timer tick with what the WireGuard device reports for the peer
// (the zero time when it never completed a handshake).
type Tick struct {
	At            time.Time
	LastHandshake time.Time
}

// NetworkChanged: a local address or route changed (or the machine woke).
// Gone lists the local addresses that went away. A direct path whose local
// candidate used one of them is dead; one whose local address is still
// there is held while a new direct session looks for paths (for a
// server-reflexive local candidate, whose base address is not known, any
// gone address of its family counts).
type NetworkChanged struct {
	At   time.Time
	Gone []netip.Addr
}

// RemoteRequest: the controlled peer asked for a session of Kind
// (controlling side only). Session is the one it last knew (0: none).
type RemoteRequest struct {
	At      time.Time
	Kind    Kind
	Session uint64
}

// Answered: the controlled peer answered our offer of Kind/Session.
type Answered struct {
	At      time.Time
	Kind    Kind
	Session uint64
}

// RemoteOnline: the map says the peer came online; retry without waiting
// for backoff.
type RemoteOnline struct{ At time.Time }

// SendFailed: an Offer (controlling) or Request (controlled) of Kind could
// not be delivered (signal says the peer is not connected). The attempt
// counts as failed and is retried with backoff; the remote peer asks for a
// session itself when it comes back.
type SendFailed struct {
	At      time.Time
	Kind    Kind
	Session uint64 // the offered session (controlling); 0 for a request
}

func (e Started) at() time.Time        { return e.At }
func (e SessionStarted) at() time.Time { return e.At }
func (e SessionChanged) at() time.Time { return e.At }
func (e Tick) at() time.Time           { return e.At }
func (e NetworkChanged) at() time.Time { return e.At }
func (e RemoteRequest) at() time.Time  { return e.At }
func (e RemoteOnline) at() time.Time   { return e.At }
func (e SendFailed) at() time.Time     { return e.At }
func (e Answered) at() time.Time       { return e.At }
