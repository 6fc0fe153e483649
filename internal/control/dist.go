package control

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"meshd/internal/netmap"
)

// distributor turns changes of an account into new maps on the streams of
// the peers they affect:
//
//   - A change marks the account dirty and wakes run. run waits the short
//     coalescing delay (bursts become one round), rebuilds the immutable
//     netmap.Index from a snapshot of the account, publishes it, and finds
//     the affected peers (netmap.Affected).
//   - It then posts to the mailboxes of those peers' streams only and wakes
//     them. A mailbox holds no maps, only what the rounds since the stream
//     last looked ask for: "the whole map", or (for a stream whose agent
//     applies updates, when only other peers' entries changed, see
//     netmap.Impacts) the set of peers whose entries changed, plus the index
//     of the newest round that posted. Rounds merge: entries add up, a whole
//     map absorbs them. A stream's wake-up is a one-slot channel; however
//     many rounds pass while it is stalled it holds one mailbox, and when it
//     sends, a whole map comes from the latest index and an update from the
//     mailbox's index. So the latest map always wins, a stalled stream holds
//     no maps and never delays anyone else.
//   - An update is built against the map the stream sent last: that map is
//     the map of its index (generation sentGen), every round after sentGen
//     that touched this peer posted to the mailbox after the stream last
//     took it, and rounds that did not touch it left its map as it was. So
//     applying the update (every posted entry as the mailbox's index has it,
//     or removed when that index does not list it) to the sent map gives the
//     map of the mailbox's index. A mailbox whose newest round is not above
//     sentGen holds nothing new.
//
// Serials come from the account's counter in the database, which every
// replica shares, so that an agent that moves between replicas or outlives
// a restart still sees them grow. A round takes one block for all the
// streams it posts to (one database call, not one per stream); a stream
// sends a serial above the one it sent last, taking a fresh one when the
// round's is not (its own full maps: the first, the credential refresh).
// While the database is lost a replica goes on from the highest serial it
// handed out, and when it is back it moves the counter above those.
type distributor struct {
	a     *account
	index atomic.Pointer[snapshot]
	wakeC chan struct{}

	flushMu sync.Mutex // one rebuild at a time

	connMu sync.Mutex
	conns  map[string]map[*conn]struct{} // peer id → its streams

	serialMu sync.Mutex
	high     uint64 // the highest serial this replica handed out

	batchMu sync.Mutex
	batch   *serialBatch // gathering requests while a take is in flight
}

// serialBatch is the serials many streams ask for at once (a replica's
// agents reconnecting), taken with one database call.
type serialBatch struct {
	n     int
	first uint64
	done  chan struct{}
}

// snapshot is an index and the generation (round) that built it.
type snapshot struct {
	ix  *netmap.Index
	gen uint64
}

// conn is one open Sync stream.
type conn struct {
	peerID  string
	updates bool          // the agent applies map updates
	wake    chan struct{} // one slot: "look at your mailbox"
	kick    chan error    // one slot: "end the stream with this error"

	mu  sync.Mutex
	box mailbox
}

// post is a round's request to one stream.
type post struct {
	c       *conn
	full    bool
	entries []string
}

// mailbox is what the rounds since a stream last looked ask it to send.
type mailbox struct {
	snap    *snapshot // the newest round that posted; nil: empty
	full    bool      // the whole map
	entries map[string]struct{}
	serial  uint64 // the newest round's serial for this stream
}

// maxUpdateEntries bounds the entries a mailbox gathers; beyond, the whole
// map is sent (an update that large saves little).
const maxUpdateEntries = 512

// post records what a round asks of c (the whole map, or new entries of the
// given peers) and wakes c.
func (c *conn) post(snap *snapshot, full bool, entries []string, serial uint64) {
	c.mu.Lock()
	b := &c.box
	b.snap = snap
	b.serial = max(b.serial, serial)
	switch {
	case full || !c.updates || len(b.entries)+len(entries) > maxUpdateEntries:
		b.full, b.entries = true, nil
	case !b.full:
		if b.entries == nil {
			b.entries = make(map[string]struct{}, len(entries))
		}
		for _, x := range entries {
			b.entries[x] = struct{}{}
		}
	}
	c.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default: // already pending: it will read the merged mailbox
	}
}

// take empties c's mailbox and returns what it held.
func (c *conn) take() mailbox {
	c.mu.Lock()
	defer c.mu.Unlock()
	b := c.box
	c.box = mailbox{}
	return b
}

func (d *distributor) init(a *account, serial uint64) {
	d.a = a
	d.wakeC = make(chan struct{}, 1)
	d.conns = map[string]map[*conn]struct{}{}
	d.high = serial
}

func (d *distributor) wake() {
	select {
	case d.wakeC <- struct{}{}:
	default:
	}
}

// run rebuilds and distributes after changes until ctx ends.
func (d *distributor) run(ctx context.Context, delay time.Duration) {
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-d.wakeC:
		}
		// Coalesce: whatever else changes within delay joins this round.
		timer.Reset(delay)
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case <-timer.C:
		}
		d.flush()
	}
}

// flush rebuilds the index from the account if it changed and wakes the
// streams of the affected peers.
func (d *distributor) flush() {
	d.flushMu.Lock()
	defer d.flushMu.Unlock()
	a := d.a
	a.mu.Lock()
	prev := d.index.Load()
	if !a.dirty && prev != nil {
		a.mu.Unlock()
		return
	}
	change := a.pending
	a.pending, a.dirty = netmap.Change{}, false
	in := a.input()
	a.mu.Unlock()

	start := time.Now()
	cur := &snapshot{ix: netmap.Build(in), gen: 1}
	var old *netmap.Index
	if prev != nil {
		old, cur.gen = prev.ix, prev.gen+1
	}
	d.index.Store(cur)
	im := netmap.Impacts(old, cur.ix, change)
	n := d.notify(cur, im)
	a.s.m.round(time.Since(start))
	a.log.Debug("maps changed", zap.Int("peers", cur.ix.Len()), zap.Bool("all", im.All), zap.Int("full", len(im.Full)),
		zap.Int("entries", len(im.Entries)), zap.Int("streams", n), zap.Duration("took", time.Since(start)))
}

// indexWith returns the current index, rebuilding it first when it does not
// know peer id yet (a peer that just joined syncs before the next round).
func (d *distributor) indexWith(id string) *snapshot {
	if s := d.index.Load(); s != nil && s.ix.Has(id) {
		return s
	}
	d.flush()
	return d.index.Load()
}

// notify posts a round's impact to the mailboxes of the streams it touches
// and returns how many it posted to.
func (d *distributor) notify(snap *snapshot, im netmap.Impact) int {
	var posts []post
	d.connMu.Lock()
	add := func(cs map[*conn]struct{}, full bool, entries []string) {
		for c := range cs {
			posts = append(posts, post{c, full, entries})
		}
	}
	if im.All || len(im.Full) > len(d.conns) {
		for id, cs := range d.conns {
			if _, ok := im.Full[id]; im.All || ok {
				add(cs, true, nil)
			}
		}
	} else {
		for id := range im.Full {
			add(d.conns[id], true, nil)
		}
	}
	for id, xs := range im.Entries { // not in Full
		add(d.conns[id], false, xs)
	}
	d.connMu.Unlock()
	if len(posts) == 0 {
		return 0
	}
	first := d.takeSerials(context.Background(), len(posts))
	for i, p := range posts {
		p.c.post(snap, p.full, p.entries, first+uint64(i))
	}
	return len(posts)
}

func (d *distributor) attach(peerID string, updates bool) *conn {
	c := &conn{peerID: peerID, updates: updates, wake: make(chan struct{}, 1), kick: make(chan error, 1)}
	d.connMu.Lock()
	defer d.connMu.Unlock()
	cs := d.conns[peerID]
	if cs == nil {
		cs = map[*conn]struct{}{}
		d.conns[peerID] = cs
	}
	cs[c] = struct{}{}
	return c
}

func (d *distributor) detach(c *conn) {
	d.connMu.Lock()
	defer d.connMu.Unlock()
	delete(d.conns[c.peerID], c)
	if len(d.conns[c.peerID]) == 0 {
		delete(d.conns, c.peerID)
	}
}

// kick ends the streams of a peer with err.
func (d *distributor) kick(peerID string, err error) {
	d.connMu.Lock()
	defer d.connMu.Unlock()
	for c := range d.conns[peerID] {
		select {
		case c.kick <- err:
		default:
		}
	}
}

// connected returns the ids of the peers with open streams.
func (d *distributor) connected() []string {
	d.connMu.Lock()
	defer d.connMu.Unlock()
	out := make([]string, 0, len(d.conns))
	for id := range d.conns {
		out = append(out, id)
	}
	return out
}

// takeSerials returns the first of n serials above every serial handed
// out before, on any replica (see distributor). Requests made while a take
// is in flight join one batch, taken with the next database call: one
// per round of rounds, however many streams start meanwhile.
func (d *distributor) takeSerials(ctx context.Context, n int) uint64 {
	d.batchMu.Lock()
	b := d.batch
	lead := b == nil
	if lead {
		b = &serialBatch{done: make(chan struct{})}
		d.batch = b
	}
	off := b.n
	b.n += n
	d.batchMu.Unlock()
	if !lead {
		<-b.done
		return b.first + uint64(off)
	}
	d.serialMu.Lock() // after the take in flight: the batch gathers meanwhile
	d.batchMu.Lock()
	d.batch = nil // later requests start the next batch
	d.batchMu.Unlock()
	// The batch is not the leader's alone: its caller going away does
	// not cancel the others' take.
	tctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), serialTimeout)
	b.first = d.take(tctx, b.n)
	cancel()
	d.serialMu.Unlock()
	close(b.done)
	return b.first
}

// serialTimeout bounds a take from the database; past it, the replica
// goes on from its own serials (see fromStore).
const serialTimeout = 5 * time.Second

// take takes n serials. Callers hold serialMu.
func (d *distributor) take(ctx context.Context, n int) uint64 {
	first, err := d.fromStore(ctx, n)
	if err != nil {
		first = d.high + 1
		if !d.a.s.fault(err) && d.a.s.refused() == nil {
			d.a.log.Warn("take serials from the store; going on from this replica's own", zap.Error(err))
		}
	}
	d.high = max(d.high, first+uint64(n)-1)
	return first
}

// fromStore takes n serials from the database. Callers hold serialMu.
func (d *distributor) fromStore(ctx context.Context, n int) (uint64, error) {
	s := d.a.s
	if err := s.refused(); err != nil {
		return 0, err
	}
	first, err := s.st.TakeSerials(ctx, d.a.id, n)
	if err != nil || first > d.high {
		return first, err
	}
	// This replica handed out serials of its own while the database was
	// lost: move the counter above them.
	if last := first + uint64(n) - 1; last < d.high {
		if _, err := s.st.TakeSerials(ctx, d.a.id, int(d.high-last)); err != nil {
			return 0, err
		}
	}
	return s.st.TakeSerials(ctx, d.a.id, n)
}
