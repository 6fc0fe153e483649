package signalclient

import (
	"container/list"
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
	key   keys.Key
	box   *seal.Box
	guard *seal.ReplayGuard
	elem  *list.Element // in peers.lru
}

// peers is the bounded table of peer state, least recently used first out.
// A new sender never waits for room: when the table is full the entry
// unused the longest goes. Only peers that signal let through reach it
// (peers of this peer's account holding a ticket from control), so a
// stranger cannot push the peers that talk to this one out. An entry that
// goes while its sender is still active loses its replay memory; the
// sender is then a peer of the account, and replaying its messages takes
// signal itself.
type peers struct {
	priv   keys.Private
	window time.Duration
	max    int

	mu  sync.Mutex
	m   map[keys.Key]*peer
	lru list.List // of *peer, most recently used at the front
}

func newPeers(priv keys.Private, window time.Duration, max int) *peers {
	return &peers{priv: priv, window: window, max: max, m: make(map[keys.Key]*peer)}
}

// get returns the state for key, creating it (and evicting the least
// recently used entry when full). A weak key is refused.
func (p *peers) get(key keys.Key) (*peer, error) {
	p.mu.Lock()
	if e := p.m[key]; e != nil {
		p.lru.MoveToFront(e.elem)
		p.mu.Unlock()
		return e, nil
	}
	p.mu.Unlock()
	// The shared key costs a scalar multiplication: compute it unlocked.
	b, err := seal.NewBox(p.priv, key)
	if err != nil {
		return nil, err
	}
	e := &peer{key: key, box: b, guard: seal.NewReplayGuard(p.window, replayMemory)}
	p.mu.Lock()
	defer p.mu.Unlock()
	if cur := p.m[key]; cur != nil {
		p.lru.MoveToFront(cur.elem)
		return cur, nil
	}
	for len(p.m) >= p.max && p.lru.Len() > 0 {
		old := p.lru.Remove(p.lru.Back()).(*peer)
		delete(p.m, old.key)
	}
	e.elem = p.lru.PushFront(e)
	p.m[key] = e
	return e, nil
}

// box returns the box for sending to key.
func (p *peers) box(key keys.Key) (*seal.Box, error) {
	e, err := p.get(key)
	if err != nil {
		return nil, err
	}
	return e.box, nil
}

// len returns how many peers the table holds.
func (p *peers) len() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.m)
}
