package signalclient

import (
	"sync"
	"time"

	"meshd/internal/keys"
	"meshd/internal/seal"
)

// maxPeersDefault bounds the per-peer state (precomputed box, replay guard)
// a client keeps.
const maxPeersDefault = 16384

// replayMemory is how many nonces a client remembers per sender.
const replayMemory = 1024

// peer is what a client keeps per remote key: the box (the shared key is
// expensive to compute) and the replay guard for messages from it.
type peer struct {
	box   *seal.Box
	guard *seal.ReplayGuard
	last  time.Time // last use
}

// peers is the bounded table of peer state. An entry unused for twice the
// replay window can be forgotten without weakening replay protection: every
// nonce its guard remembers is outside the window by then, so the new
// guard refuses those messages as stale anyway.
type peers struct {
	priv   keys.Private
	window time.Duration
	max    int

	mu sync.Mutex
	m  map[keys.Key]*peer
}

func newPeers(priv keys.Private, window time.Duration, max int) *peers {
	return &peers{priv: priv, window: window, max: max, m: make(map[keys.Key]*peer)}
}

// get returns the state for key, creating it; nil when the table is full of
// peers in use (then the caller refuses the message: a flood of new keys
// must not grow memory).
func (p *peers) get(key keys.Key, now time.Time) *peer {
	p.mu.Lock()
	e := p.m[key]
	if e != nil {
		e.last = now
		p.mu.Unlock()
		return e
	}
	if len(p.m) >= p.max {
		for k, old := range p.m {
			if now.Sub(old.last) > 2*p.window {
				delete(p.m, k)
			}
		}
		if len(p.m) >= p.max {
			p.mu.Unlock()
			return nil
		}
	}
	p.mu.Unlock()
	// The shared key costs a scalar multiplication: compute it unlocked.
	e = &peer{box: seal.NewBox(p.priv, key), guard: seal.NewReplayGuard(p.window, replayMemory), last: now}
	p.mu.Lock()
	defer p.mu.Unlock()
	if cur := p.m[key]; cur != nil {
		return cur
	}
	p.m[key] = e
	return e
}

// box returns the box for sending to key, cached when there is room.
func (p *peers) box(key keys.Key, now time.Time) *seal.Box {
	if e := p.get(key, now); e != nil {
		return e.box
	}
	return seal.NewBox(p.priv, key)
}
