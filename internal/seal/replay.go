package seal

import (
	"fmt"
	"sync"
	"time"
)

// ReplayGuard refuses sealed messages that were seen before or whose
// timestamp lies outside ±Window of now. It remembers at most Max nonces;
// when it must forget one, it also stops accepting anything older than the
// forgotten one, so a replay can never slip through a full cache.
type ReplayGuard struct {
	window time.Duration
	max    int

	mu    sync.Mutex
	seen  map[[NonceLen]byte]struct{}
	order []seenNonce // FIFO by insertion
	head  int
	floor time.Time // messages at or before floor are refused
}

type seenNonce struct {
	nonce [NonceLen]byte
	at    time.Time
}

// NewReplayGuard returns a guard for messages within ±window of the
// recipient's clock, remembering up to max nonces.
func NewReplayGuard(window time.Duration, max int) *ReplayGuard {
	if max < 1 {
		max = 1
	}
	return &ReplayGuard{window: window, max: max, seen: make(map[[NonceLen]byte]struct{})}
}

// Check records nonce, sealed at time at, and refuses it when it is a replay
// or stale.
func (g *ReplayGuard) Check(nonce *[NonceLen]byte, at, now time.Time) error {
	if at.Before(now.Add(-g.window)) || at.After(now.Add(g.window)) {
		return fmt.Errorf("%w: sealed %s from now", ErrStale, at.Sub(now).Round(time.Second))
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if !at.After(g.floor) {
		return fmt.Errorf("%w: older than what the guard still remembers", ErrStale)
	}
	if _, ok := g.seen[*nonce]; ok {
		return ErrReplay
	}
	// Forget what has left the window, then make room.
	for g.head < len(g.order) && (g.order[g.head].at.Before(now.Add(-g.window)) || len(g.order)-g.head >= g.max) {
		old := g.order[g.head]
		delete(g.seen, old.nonce)
		if old.at.After(g.floor) {
			g.floor = old.at
		}
		g.head++
	}
	if g.head > len(g.order)/2 && g.head > 64 {
		g.order = append(g.order[:0], g.order[g.head:]...)
		g.head = 0
	}
	g.seen[*nonce] = struct{}{}
	g.order = append(g.order, seenNonce{nonce: *nonce, at: at})
	return nil
}
