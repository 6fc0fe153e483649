package cluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"sort"
	"strings"
	"sync"
	"time"
)

// subBuffer is how many messages a slow subscriber may fall behind before
// it loses messages (and is told so with a nil payload).
const subBuffer = 1024

// onceSweep is how often PutOnce drops expired one-time tokens.
const onceSweep = time.Second

// Group is the shared state of replicas that live in one process: `meshd
// all` on SQLite has one replica in it; tests put several.
type Group struct {
	now func() time.Time

	mu       sync.Mutex
	replicas map[string]Replica
	leases   map[string]lease
	present  map[string]map[string]bool // key → replica IDs
	once     map[string]time.Time
	onceNext time.Time                // next sweep of expired one-time tokens
	subs     map[string]map[*sub]bool // channel → subscribers
}

type lease struct {
	holder string
	until  time.Time
}

// sub is one subscription. Its channel holds subBuffer messages and one
// slot more, kept for the nil that reports a loss: the nil is queued the
// moment a message is dropped, so a subscriber learns of a loss even when
// nothing follows it. Only the group sends on ch, holding g.mu.
type sub struct {
	ch chan []byte
}

// NewGroup returns an empty group. now may be nil (time.Now).
func NewGroup(now func() time.Time) *Group {
	if now == nil {
		now = time.Now
	}
	return &Group{now: now, replicas: map[string]Replica{}, leases: map[string]lease{},
		present: map[string]map[string]bool{}, once: map[string]time.Time{}, subs: map[string]map[*sub]bool{}}
}

// Local returns a cluster of one replica in a group of its own.
func Local() Cluster { return NewGroup(nil).Join() }

// Join returns a new replica of the group with a random ID.
func (g *Group) Join() Cluster {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return &local{g: g, id: hex.EncodeToString(b)}
}

type local struct {
	g  *Group
	id string
}

func (l *local) Self() string { return l.id }

func (l *local) Publish(ctx context.Context, channel string, payload []byte) error {
	if len(payload) > MaxPayload {
		return ErrTooLarge
	}
	g := l.g
	g.mu.Lock()
	defer g.mu.Unlock()
	for s := range g.subs[channel] {
		switch {
		case len(s.ch) < subBuffer:
			s.ch <- append(make([]byte, 0, len(payload)), payload...) // never nil: nil means loss
		case len(s.ch) < cap(s.ch):
			s.ch <- nil // dropped: say so (unless the last slot says so already)
		}
	}
	return nil
}

func (l *local) Subscribe(ctx context.Context, channel string) (<-chan []byte, error) {
	g := l.g
	s := &sub{ch: make(chan []byte, subBuffer+1)}
	g.mu.Lock()
	if g.subs[channel] == nil {
		g.subs[channel] = map[*sub]bool{}
	}
	g.subs[channel][s] = true
	g.mu.Unlock()
	go func() {
		<-ctx.Done()
		g.mu.Lock()
		delete(g.subs[channel], s)
		close(s.ch)
		g.mu.Unlock()
	}()
	return s.ch, nil
}

func (l *local) Heartbeat(ctx context.Context, r Replica, ttl time.Duration) ([]Replica, error) {
	g := l.g
	g.mu.Lock()
	defer g.mu.Unlock()
	now := g.now()
	r.ID, r.Seen = l.id, now
	g.replicas[l.id] = r
	var out []Replica
	for id, x := range g.replicas {
		if now.Sub(x.Seen) > ttl {
			g.forget(id)
			continue
		}
		out = append(out, x)
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].Started.Equal(out[j].Started) {
			return out[i].Started.Before(out[j].Started)
		}
		return out[i].ID < out[j].ID
	})
	return out, nil
}

// forget drops a dead replica and everything it held. g.mu is held.
func (g *Group) forget(id string) {
	delete(g.replicas, id)
	for k, ids := range g.present {
		delete(ids, id)
		if len(ids) == 0 {
			delete(g.present, k)
		}
	}
	for name, ls := range g.leases {
		if ls.holder == id {
			delete(g.leases, name)
		}
	}
}

func (l *local) Lead(ctx context.Context, name string, ttl time.Duration) (bool, error) {
	g := l.g
	g.mu.Lock()
	defer g.mu.Unlock()
	now := g.now()
	if ls, ok := g.leases[name]; ok && ls.holder != l.id && now.Before(ls.until) {
		return false, nil
	}
	g.leases[name] = lease{holder: l.id, until: now.Add(ttl)}
	return true, nil
}

func (l *local) SetPresent(ctx context.Context, key string, present bool) error {
	g := l.g
	g.mu.Lock()
	defer g.mu.Unlock()
	if present {
		if g.present[key] == nil {
			g.present[key] = map[string]bool{}
		}
		g.present[key][l.id] = true
		return nil
	}
	delete(g.present[key], l.id)
	if len(g.present[key]) == 0 {
		delete(g.present, key)
	}
	return nil
}

func (l *local) Present(ctx context.Context, key string) ([]string, error) {
	g := l.g
	g.mu.Lock()
	defer g.mu.Unlock()
	var ids []string
	for id := range g.present[key] {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids, nil
}

func (l *local) PresentWithPrefix(ctx context.Context, prefix string) ([]string, error) {
	g := l.g
	g.mu.Lock()
	defer g.mu.Unlock()
	var keys []string
	for k := range g.present {
		if strings.HasPrefix(k, prefix) {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	return keys, nil
}

func (l *local) PutOnce(ctx context.Context, token string, exp time.Time) error {
	g := l.g
	g.mu.Lock()
	defer g.mu.Unlock()
	// Anyone may ask for a challenge: sweeping on every call would make
	// each one walk all the tokens alive. Once a second keeps the cost
	// per token constant and expired ones at most a second too long.
	if now := g.now(); !now.Before(g.onceNext) {
		for t, e := range g.once {
			if !now.Before(e) {
				delete(g.once, t)
			}
		}
		g.onceNext = now.Add(onceSweep)
	}
	g.once[token] = exp
	return nil
}

func (l *local) TakeOnce(ctx context.Context, token string, now time.Time) (bool, error) {
	g := l.g
	g.mu.Lock()
	defer g.mu.Unlock()
	exp, ok := g.once[token]
	delete(g.once, token)
	return ok && now.Before(exp), nil
}

func (l *local) Close() error {
	g := l.g
	g.mu.Lock()
	defer g.mu.Unlock()
	g.forget(l.id)
	return nil
}
