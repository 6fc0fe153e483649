package pgcluster

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"

	"meshd/internal/cluster"
)

const (
	// subBuffer is how many messages a slow subscriber may fall behind
	// before it loses messages (and is told so with a nil payload).
	subBuffer = 1024
	// maxNotify bounds one NOTIFY payload (PostgreSQL refuses 8,000 bytes).
	maxNotify = 7900
	// maxBatch bounds the messages of one round trip to the database.
	maxBatch = 1024
	// senders is how many statements may carry messages at once: while
	// one waits for the database, the next gathers what queues meanwhile.
	senders = 4
	// frameVersion starts every NOTIFY payload: a replica that reads a
	// version it does not know (a newer binary's) reports a loss instead
	// of garbage.
	frameVersion = "1"
)

var errClosed = errors.New("pgcluster: closed")

// batchLimit is maxBatch; the benchmark sets it to 1 to measure what
// batching saves.
var batchLimit = maxBatch

// bus is the message bus: Publish calls queue their messages, and a few
// goroutines each send whatever has queued meanwhile in one statement,
// many messages per NOTIFY, so that the cost of a round trip and of a
// notification is shared by many small messages. Another goroutine holds
// the one connection that LISTENs and fans notifications out to the
// subscribers of this process.
type bus struct {
	c     *Cluster
	log   *zap.Logger
	queue chan *pubReq
	stop  chan struct{}
	ctl   string // this replica's control channel: wakes the listener

	mu        sync.Mutex
	topics    map[string]*topic // PostgreSQL channel → subscribers
	listening map[string]bool   // channels LISTENed on the current connection
	connected bool
	dirty     bool          // topics changed since the listener last synced
	changed   chan struct{} // closed (and replaced) when listening changes
	closed    bool
}

type topic struct{ subs map[*sub]bool }

// sub is one subscription. Its channel holds subBuffer messages and one
// slot more, kept for the nil that reports a loss: the nil is queued the
// moment a message is dropped, so a subscriber learns of a loss even when
// nothing follows it. Only the bus sends on ch, holding bus.mu.
type sub struct {
	ch     chan []byte
	closed bool
}

// send queues m, or drops it and queues the loss marker when the
// subscriber is subBuffer messages behind.
func (s *sub) send(m []byte) {
	if len(s.ch) < subBuffer {
		s.ch <- m
		return
	}
	s.lose()
}

// lose queues the loss marker unless the last slot holds one already.
func (s *sub) lose() {
	if len(s.ch) < cap(s.ch) {
		s.ch <- nil
	}
}

type pubReq struct {
	channel string // PostgreSQL channel
	b64     string
	done    chan error
}

func newBus(c *Cluster) *bus {
	return &bus{c: c, log: c.log, queue: make(chan *pubReq, maxBatch), stop: make(chan struct{}),
		ctl: "meshd_ctl_" + c.id, topics: map[string]*topic{}, listening: map[string]bool{}, changed: make(chan struct{})}
}

// pgChannel maps a cluster channel to a PostgreSQL channel: an identifier
// of at most 63 bytes whatever the name, readable in pg_stat_activity.
func pgChannel(name string) string {
	sum := sha256.Sum256([]byte(name))
	var b strings.Builder
	b.WriteString("meshd_")
	for _, r := range name {
		if b.Len() >= 26 {
			break
		}
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			b.WriteRune(r)
		case r >= 'A' && r <= 'Z':
			b.WriteRune(r + 'a' - 'A')
		default:
			b.WriteByte('_')
		}
	}
	b.WriteByte('_')
	b.WriteString(hex.EncodeToString(sum[:8]))
	return b.String()
}

// start connects the listener (so that Open fails when it cannot) and
// starts the goroutines, which live until run ends.
func (b *bus) start(ctx, run context.Context) error {
	conn, err := b.connect(ctx)
	if err != nil {
		return err
	}
	b.c.done.Add(1 + senders)
	go b.listen(run, conn)
	for range senders {
		go b.publisher(run)
	}
	return nil
}

func (b *bus) connect(ctx context.Context) (*pgx.Conn, error) {
	conn, err := pgx.ConnectConfig(ctx, b.c.cfg)
	if err != nil {
		return nil, err
	}
	if _, err := conn.Exec(ctx, "LISTEN "+b.ctl); err != nil {
		conn.Close(context.Background())
		return nil, err
	}
	return conn, nil
}

func (b *bus) close() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return
	}
	b.closed = true
	close(b.stop)
	for _, t := range b.topics {
		for s := range t.subs {
			s.closed = true
			close(s.ch)
		}
	}
	b.topics = map[string]*topic{}
}

// listen runs the listen connection, reconnecting with jittered backoff
// when it is lost; after a reconnect every subscriber gets a nil payload,
// since notifications sent meanwhile are gone.
func (b *bus) listen(ctx context.Context, conn *pgx.Conn) {
	defer b.c.done.Done()
	reconnected := false
	step := 100 * time.Millisecond
	for {
		if conn == nil {
			wait := step/2 + rand.N(step/2+1)
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait):
			}
			step = min(2*step, 5*time.Second)
			cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			c, err := b.connect(cctx)
			cancel()
			if err != nil {
				b.log.Debug("reconnect listener", zap.Error(err))
				continue
			}
			conn, reconnected, step = c, true, 100*time.Millisecond
			b.log.Info("listener reconnected; subscribers resync")
		}
		err := b.serve(ctx, conn, reconnected)
		cctx, cancel := context.WithTimeout(context.Background(), time.Second)
		conn.Close(cctx)
		cancel()
		conn = nil
		b.mu.Lock()
		b.listening, b.connected, b.dirty = map[string]bool{}, false, true
		close(b.changed)
		b.changed = make(chan struct{})
		b.mu.Unlock()
		if ctx.Err() != nil {
			return
		}
		b.log.Warn("listener lost the database; reconnecting", zap.Error(err))
	}
}

// serve LISTENs on what the subscribers want and delivers notifications
// until the connection fails or ctx ends.
func (b *bus) serve(ctx context.Context, conn *pgx.Conn, reconnected bool) error {
	b.mu.Lock()
	b.connected, b.dirty = true, true
	b.mu.Unlock()
	for {
		if err := b.sync(ctx, conn); err != nil {
			return err
		}
		if reconnected {
			b.lostAll()
			reconnected = false
		}
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return err
		}
		if n.Channel != b.ctl {
			b.deliver(n.Channel, n.Payload)
		}
	}
}

// sync brings the connection's LISTENs in line with the subscribers.
func (b *bus) sync(ctx context.Context, conn *pgx.Conn) error {
	b.mu.Lock()
	if !b.dirty {
		b.mu.Unlock()
		return nil
	}
	b.dirty = false
	var add, drop []string
	for ch := range b.topics {
		if !b.listening[ch] {
			add = append(add, ch)
		}
	}
	for ch := range b.listening {
		if b.topics[ch] == nil {
			drop = append(drop, ch)
		}
	}
	b.mu.Unlock()
	if len(add)+len(drop) == 0 {
		return nil
	}
	var q strings.Builder
	for _, ch := range add {
		q.WriteString("LISTEN " + ch + ";")
	}
	for _, ch := range drop {
		q.WriteString("UNLISTEN " + ch + ";")
	}
	if _, err := conn.Exec(ctx, q.String()); err != nil {
		b.mu.Lock()
		b.dirty = true
		b.mu.Unlock()
		return err
	}
	b.mu.Lock()
	for _, ch := range add {
		b.listening[ch] = true
	}
	for _, ch := range drop {
		delete(b.listening, ch)
	}
	close(b.changed)
	b.changed = make(chan struct{})
	b.mu.Unlock()
	return nil
}

// lostAll tells every subscriber that messages may have been lost.
func (b *bus) lostAll() {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, t := range b.topics {
		for s := range t.subs {
			s.lose()
		}
	}
}

// deliver fans a notification's messages out, never blocking: a full
// subscriber loses the message and is told so.
func (b *bus) deliver(channel, payload string) {
	msgs, err := decodeFrame(payload)
	b.mu.Lock()
	defer b.mu.Unlock()
	t := b.topics[channel]
	if t == nil {
		return
	}
	if err != nil {
		b.log.Warn("unreadable notification; subscribers resync", zap.String("channel", channel), zap.Error(err))
		for s := range t.subs {
			s.lose()
		}
		return
	}
	for _, m := range msgs {
		for s := range t.subs {
			s.send(append(make([]byte, 0, len(m)), m...)) // never nil: nil means loss
		}
	}
}

// subscribe registers a subscriber and, for a channel new to this
// process, waits until the listener LISTENs on it, so that whatever is
// published after subscribe returns reaches it. While the listener is
// reconnecting it returns at once: the nil after the reconnect covers it.
func (b *bus) subscribe(ctx context.Context, channel string) (<-chan []byte, error) {
	ch := pgChannel(channel)
	s := &sub{ch: make(chan []byte, subBuffer+1)}
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil, errClosed
	}
	t := b.topics[ch]
	if t == nil {
		t = &topic{subs: map[*sub]bool{}}
		b.topics[ch] = t
		b.dirty = true
	}
	t.subs[s] = true
	wait := b.connected && !b.listening[ch]
	b.mu.Unlock()
	go func() {
		select {
		case <-ctx.Done():
		case <-b.stop:
		}
		b.unsubscribe(ch, s)
	}()
	if !wait {
		return s.ch, nil
	}
	if _, err := b.c.pub.Exec(ctx, "SELECT pg_notify($1, '')", b.ctl); err != nil {
		b.unsubscribe(ch, s)
		return nil, unavailable("subscribe "+channel, err)
	}
	timeout := time.NewTimer(10 * time.Second)
	defer timeout.Stop()
	for {
		b.mu.Lock()
		ready := b.listening[ch] || !b.connected
		changed := b.changed
		b.mu.Unlock()
		if ready {
			return s.ch, nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-timeout.C:
			b.unsubscribe(ch, s)
			return nil, unavailable("subscribe "+channel, errors.New("the listener did not LISTEN within 10s"))
		}
	}
}

func (b *bus) unsubscribe(ch string, s *sub) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if s.closed {
		return
	}
	s.closed = true
	close(s.ch)
	t := b.topics[ch]
	if t == nil {
		return
	}
	delete(t.subs, s)
	if len(t.subs) == 0 {
		delete(b.topics, ch) // UNLISTEN at the listener's next sync
		b.dirty = true
	}
}

// publish queues a message and waits until the statement that carries it
// has run, so that errors reach the caller and a publisher's messages stay
// in order: its next one is queued only once the previous one is sent,
// whichever sender carries it.
func (b *bus) publish(ctx context.Context, channel string, payload []byte) error {
	if len(payload) > cluster.MaxPayload {
		return cluster.ErrTooLarge
	}
	r := &pubReq{channel: pgChannel(channel), b64: base64.StdEncoding.EncodeToString(payload), done: make(chan error, 1)}
	select {
	case b.queue <- r:
	case <-ctx.Done():
		return ctx.Err()
	case <-b.stop:
		return errClosed
	}
	select {
	case err := <-r.done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	case <-b.stop:
		return errClosed
	}
}

func (b *bus) publisher(ctx context.Context) {
	defer b.c.done.Done()
	var seq uint64
	batch := make([]*pubReq, 0, maxBatch)
	for {
		batch = batch[:0]
		select {
		case r := <-b.queue:
			batch = append(batch, r)
		case <-ctx.Done():
			return
		}
	drain:
		for len(batch) < batchLimit {
			select {
			case r := <-b.queue:
				batch = append(batch, r)
			default:
				break drain
			}
		}
		var chans, payloads []string
		chans, payloads, seq = frames(batch, seq)
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_, err := b.c.pub.Exec(sctx, `SELECT pg_notify(c, p) FROM unnest($1::text[], $2::text[]) AS t(c, p)`, chans, payloads)
		cancel()
		if err != nil {
			err = unavailable("publish", err)
		}
		for _, r := range batch {
			r.done <- err
		}
	}
}

// frames packs a batch into NOTIFY payloads: "1 SEQ B64 B64 ...", per
// channel in queue order. SEQ makes every payload of a transaction
// distinct (PostgreSQL folds identical ones).
func frames(batch []*pubReq, seq uint64) (chans, payloads []string, next uint64) {
	open := map[string]*strings.Builder{}
	var order []string
	flush := func(ch string) {
		chans = append(chans, ch)
		payloads = append(payloads, open[ch].String())
		delete(open, ch)
	}
	for _, r := range batch {
		f := open[r.channel]
		if f != nil && f.Len()+1+len(r.b64) > maxNotify {
			flush(r.channel)
			f = nil
		}
		if f == nil {
			f = &strings.Builder{}
			seq++
			f.WriteString(frameVersion + " " + strconv.FormatUint(seq, 10))
			open[r.channel] = f
			order = append(order, r.channel)
		}
		f.WriteByte(' ')
		f.WriteString(r.b64)
	}
	for _, ch := range order {
		if open[ch] != nil {
			flush(ch)
		}
	}
	return chans, payloads, seq
}

func decodeFrame(payload string) ([][]byte, error) {
	fields := strings.Split(payload, " ")
	if len(fields) < 2 || fields[0] != frameVersion {
		return nil, fmt.Errorf("frame version %q unknown", fields[0])
	}
	out := make([][]byte, 0, len(fields)-2)
	for _, f := range fields[2:] {
		m, err := base64.StdEncoding.DecodeString(f)
		if err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	return out, nil
}
