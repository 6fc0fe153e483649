package control

import (
	"context"
	"fmt"
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
//   - It then wakes the streams of those peers only. A stream's wake-up is a
//     one-slot channel: however many rounds pass while a stream is stalled,
//     it holds at most one pending wake-up, and when it sends it computes
//     the map from the latest index. So the latest map always wins, a stalled
//     stream holds no maps and never delays anyone else.
//
// Serials come from one counter per account, taken after a stream loads the
// index it computes from; a stream sends maps in serial order, and the
// counter's high-water mark is persisted in blocks so that a restart
// continues above every serial handed out.
type distributor struct {
	a     *account
	index atomic.Pointer[netmap.Index]
	wakeC chan struct{}

	flushMu sync.Mutex // one rebuild at a time

	connMu sync.Mutex
	conns  map[string]map[*conn]struct{} // peer id → its streams

	serialMu sync.Mutex
	serial   uint64 // last handed out
	reserved uint64 // persisted high-water mark
}

// serialBlock is how many serials are reserved with one database write.
const serialBlock = 1024

// conn is one open Sync stream.
type conn struct {
	peerID string
	wake   chan struct{} // one slot: "compute and send your map"
	kick   chan error    // one slot: "end the stream with this error"
}

func (d *distributor) init(a *account, serial uint64) {
	d.a = a
	d.wakeC = make(chan struct{}, 1)
	d.conns = map[string]map[*conn]struct{}{}
	d.serial, d.reserved = serial, serial
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
	if !a.dirty && d.index.Load() != nil {
		a.mu.Unlock()
		return
	}
	change := a.pending
	a.pending, a.dirty = netmap.Change{}, false
	in := a.input()
	a.mu.Unlock()

	start := time.Now()
	cur := netmap.Build(in)
	old := d.index.Swap(cur)
	ids, all := netmap.Affected(old, cur, change)
	n := d.notify(ids, all)
	a.log.Debug("maps changed", zap.Int("peers", cur.Len()), zap.Bool("all", all), zap.Int("affected", len(ids)),
		zap.Int("streams", n), zap.Duration("took", time.Since(start)))
}

// indexWith returns the current index, rebuilding it first when it does not
// know peer id yet (a peer that just joined syncs before the next round).
func (d *distributor) indexWith(id string) *netmap.Index {
	if ix := d.index.Load(); ix != nil && ix.Has(id) {
		return ix
	}
	d.flush()
	return d.index.Load()
}

// notify wakes the streams of the peers in ids (all streams when all) and
// returns how many it woke.
func (d *distributor) notify(ids map[string]struct{}, all bool) int {
	d.connMu.Lock()
	defer d.connMu.Unlock()
	n := 0
	wakeAll := func(cs map[*conn]struct{}) {
		for c := range cs {
			select {
			case c.wake <- struct{}{}:
			default: // already pending: it will send the latest map
			}
			n++
		}
	}
	if all || len(ids) > len(d.conns) {
		for id, cs := range d.conns {
			if _, ok := ids[id]; all || ok {
				wakeAll(cs)
			}
		}
		return n
	}
	for id := range ids {
		wakeAll(d.conns[id])
	}
	return n
}

func (d *distributor) attach(peerID string) *conn {
	c := &conn{peerID: peerID, wake: make(chan struct{}, 1), kick: make(chan error, 1)}
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

// nextSerial returns a serial above every one handed out before, also
// across restarts.
func (d *distributor) nextSerial(ctx context.Context) (uint64, error) {
	d.serialMu.Lock()
	defer d.serialMu.Unlock()
	next := d.serial + 1
	if next > d.reserved {
		upTo := next + serialBlock - 1
		if err := d.a.s.st.ReserveSerial(ctx, d.a.id, upTo); err != nil {
			return 0, fmt.Errorf("serial: %w", err)
		}
		d.reserved = upTo
	}
	d.serial = next
	return next, nil
}
