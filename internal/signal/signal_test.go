package signal_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"go.uber.org/goleak"

	signalv1 "meshd/api/signal/v1"
	"meshd/internal/keys"
	"meshd/internal/seal"
	"meshd/internal/signal"
	"meshd/internal/signal/signaltest"
	"meshd/internal/signalclient"
	"meshd/internal/testutil"
)

func TestMain(m *testing.M) {
	if benchServerMode() {
		return // the benchmark's server process; see bench_server_test.go
	}
	// The shared PostgreSQL server (pgtest.Shared) outlives the benchmarks.
	goleak.VerifyTestMain(m, goleak.IgnoreAnyFunction("meshd/internal/pgtest.(*Server).startWatchdog.func1"))
}

// inbox collects what a peer's handler receives.
type inbox struct {
	mu   sync.Mutex
	msgs []received
	note chan struct{}
}

type received struct {
	from    keys.Key
	payload []byte
}

func newInbox() *inbox { return &inbox{note: make(chan struct{}, 1)} }

func (in *inbox) add(from keys.Key, p []byte) {
	in.mu.Lock()
	in.msgs = append(in.msgs, received{from, p})
	in.mu.Unlock()
	select {
	case in.note <- struct{}{}:
	default:
	}
}

// wait returns the first n messages, failing the test after 10 s.
func (in *inbox) wait(tb testing.TB, n int) []received {
	tb.Helper()
	deadline := time.NewTimer(10 * time.Second)
	defer deadline.Stop()
	for {
		in.mu.Lock()
		got := append([]received(nil), in.msgs...)
		in.mu.Unlock()
		if len(got) >= n {
			return got[:n]
		}
		select {
		case <-in.note:
		case <-deadline.C:
			tb.Fatalf("received %d messages, want %d", len(got), n)
		}
	}
}

func (in *inbox) len() int {
	in.mu.Lock()
	defer in.mu.Unlock()
	return len(in.msgs)
}

func ctx(tb testing.TB) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	tb.Cleanup(cancel)
	return c
}

func TestDeliverOverTLSAndH2C(t *testing.T) {
	for _, h2c := range []bool{false, true} {
		t.Run(fmt.Sprintf("h2c=%v", h2c), func(t *testing.T) {
			h := signaltest.Start(t, signaltest.Options{H2C: h2c})
			in := newInbox()
			a := h.Peer(t, signaltest.PeerOptions{})
			b := h.Peer(t, signaltest.PeerOptions{OnMessage: in.add})
			if err := a.Send(ctx(t), b.PublicKey(), []byte("offer ufrag=x pwd=y")); err != nil {
				t.Fatalf("send: %v", err)
			}
			got := in.wait(t, 1)
			if got[0].from != a.PublicKey() || string(got[0].payload) != "offer ufrag=x pwd=y" {
				t.Fatalf("got %q from %s, want the offer from %s", got[0].payload, got[0].from, a.PublicKey())
			}
			if st := a.State(); st.State != signalclient.Connected || st.Sent != 1 {
				t.Fatalf("sender state %+v", st)
			}
			if s := h.Signal.Stats(); s.Queued != 1 || s.Sent != 1 || s.Registered != 2 {
				t.Fatalf("stats %+v", s)
			}
		})
	}
}

func TestOfflinePeerIsAnsweredNotConnected(t *testing.T) {
	h := signaltest.Start(t, signaltest.Options{})
	a := h.Peer(t, signaltest.PeerOptions{})
	offline, _ := keys.Generate()
	err := a.Send(ctx(t), offline.Public(), []byte("hi"))
	var de *signalclient.DeliveryError
	if !errors.Is(err, signalclient.ErrNotConnected) || !errors.As(err, &de) || de.To != offline.Public() {
		t.Fatalf("send to offline peer: %v, want ErrNotConnected", err)
	}
	// A peer that leaves is offline again.
	b := h.Peer(t, signaltest.PeerOptions{})
	if err := a.Send(ctx(t), b.PublicKey(), []byte("hi")); err != nil {
		t.Fatalf("send to online peer: %v", err)
	}
	b.Stop()
	testutil.WaitFor(t, 10*time.Second, "the stopped peer to be reported offline", func() bool {
		return errors.Is(a.Send(ctx(t), b.PublicKey(), []byte("hi")), signalclient.ErrNotConnected)
	})
}

func TestRegistrationNeedsTheKey(t *testing.T) {
	h := signaltest.Start(t, signaltest.Options{})
	in := newInbox()
	victim := h.Peer(t, signaltest.PeerOptions{OnMessage: in.add})
	attacker, _ := keys.Generate()

	prove := func(purpose string, signer keys.Private) func(*signalv1.Challenge) ([]byte, []byte) {
		return func(ch *signalv1.Challenge) ([]byte, []byte) {
			server, err := keys.FromBytes(ch.ServerPublicKey)
			if err != nil {
				t.Fatal(err)
			}
			n, s, err := seal.Prove(purpose, ch.Challenge, server, signer)
			if err != nil {
				t.Fatal(err)
			}
			return n[:], s
		}
	}
	for _, tt := range []struct {
		name  string
		proof func(*signalv1.Challenge) (nonce, sealed []byte)
	}{
		{"proof by another key", prove(seal.PurposeSignal, attacker)},
		{"proof for another purpose", prove(seal.PurposeLogin, victim.Key)},
		{"short nonce", func(*signalv1.Challenge) ([]byte, []byte) { return []byte{1, 2, 3}, []byte("x") }},
		{"empty", func(*signalv1.Challenge) ([]byte, []byte) { return nil, nil }},
		{"proof of another challenge", func(ch *signalv1.Challenge) ([]byte, []byte) {
			other := &signalv1.Challenge{ServerPublicKey: ch.ServerPublicKey, Challenge: bytes.Clone(ch.Challenge)}
			other.Challenge[0] ^= 1
			return prove(seal.PurposeSignal, victim.Key)(other)
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := h.Dial(t)
			ch, err := r.Hello(victim.PublicKey())
			if err != nil {
				t.Fatal(err)
			}
			nonce, sealed := tt.proof(ch)
			_, err = r.Register(nonce, sealed)
			if connect.CodeOf(err) != connect.CodeUnauthenticated {
				t.Fatalf("register: %v, want unauthenticated", err)
			}
		})
	}
	t.Run("envelope before hello", func(t *testing.T) {
		r := h.Dial(t)
		r.Key = attacker
		if err := r.SendEnvelope(r.Seal(victim.PublicKey(), 1, []byte("x"))); err != nil {
			t.Fatal(err)
		}
		if _, err := r.Stream.Receive(); connect.CodeOf(err) != connect.CodeInvalidArgument {
			t.Fatalf("receive: %v, want invalid argument", err)
		}
	})
	t.Run("bad hello key", func(t *testing.T) {
		r := h.Dial(t)
		if _, err := r.Hello(keys.Key{}); connect.CodeOf(err) != connect.CodeInvalidArgument {
			t.Fatalf("hello with zero key: %v, want invalid argument", err)
		}
	})

	// The victim was never displaced and still gets its messages.
	a := h.Peer(t, signaltest.PeerOptions{})
	if err := a.Send(ctx(t), victim.PublicKey(), []byte("for the victim")); err != nil {
		t.Fatal(err)
	}
	if got := in.wait(t, 1); string(got[0].payload) != "for the victim" {
		t.Fatalf("victim got %q", got[0].payload)
	}
	if s := h.Signal.Stats(); s.Refused != 7 || s.Replaced != 0 {
		t.Fatalf("stats %+v: want 7 refused, none replaced", s)
	}
}

func TestNewerStreamReplacesOlder(t *testing.T) {
	h := signaltest.Start(t, signaltest.Options{})
	key, _ := keys.Generate()
	old := h.Register(t, key)
	in := newInbox()
	newer := h.Peer(t, signaltest.PeerOptions{Key: key, OnMessage: in.add})

	// The old stream is ended with "aborted", after which it gets nothing.
	var err error
	for range 1000 {
		var m *signalv1.ServerMessage
		if m, err = old.Stream.Receive(); err != nil {
			break
		}
		if m.GetEnvelope() != nil {
			t.Fatal("the replaced stream received an envelope")
		}
	}
	if connect.CodeOf(err) != connect.CodeAborted {
		t.Fatalf("old stream ended with %v, want aborted", err)
	}
	a := h.Peer(t, signaltest.PeerOptions{})
	if err := a.Send(ctx(t), key.Public(), []byte("to the newer")); err != nil {
		t.Fatal(err)
	}
	if got := in.wait(t, 1); string(got[0].payload) != "to the newer" {
		t.Fatalf("got %q", got[0].payload)
	}
	if s := h.Signal.Stats(); s.Replaced != 1 {
		t.Fatalf("stats %+v, want one replaced", s)
	}
	if st := newer.State(); st.State != signalclient.Connected {
		t.Fatalf("newer stream: %+v", st)
	}
}

func TestClientReconnectsAfterBeingReplaced(t *testing.T) {
	h := signaltest.Start(t, signaltest.Options{})
	in := newInbox()
	p := h.Peer(t, signaltest.PeerOptions{OnMessage: in.add})
	intruder := h.Register(t, p.Key) // takes over the key...
	// ...until the client notices, backs off and registers again.
	testutil.WaitFor(t, 10*time.Second, "the client to register again", func() bool { return h.Signal.Stats().Registered == 3 })
	if _, err := intruder.Stream.Receive(); err == nil {
		for range 1000 {
			if _, err = intruder.Stream.Receive(); err != nil {
				break
			}
		}
	}
	if err := p.WaitConnected(ctx(t)); err != nil {
		t.Fatal(err)
	}
	if st := p.State(); !errors.Is(st.LastError, signalclient.ErrReplaced) {
		t.Fatalf("last error %v, want ErrReplaced", st.LastError)
	}
	a := h.Peer(t, signaltest.PeerOptions{})
	testutil.WaitFor(t, 10*time.Second, "delivery to the reconnected client", func() bool {
		return a.Send(ctx(t), p.PublicKey(), []byte("back")) == nil
	})
	in.wait(t, 1)
}

// seqPayload is a sender index and a sequence number.
func seqPayload(sender, seq int) []byte {
	return binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(nil, uint32(sender)), uint32(seq))
}

func TestOrderPerSenderIsKept(t *testing.T) {
	const senders, perSender = 4, 250
	h := signaltest.Start(t, signaltest.Options{Signal: signal.Options{QueueLen: senders * perSender, RatePerSecond: 1e6, Burst: 1e6}})
	in := newInbox()
	b := h.Peer(t, signaltest.PeerOptions{OnMessage: in.add})

	var wg sync.WaitGroup
	errs := make(chan error, senders)
	for i := range senders {
		r := h.Register(t, keys.Private{})
		wg.Go(func() {
			// Pipelined: all envelopes first, then the answers.
			for seq := range perSender {
				if err := r.SendEnvelope(r.Seal(b.PublicKey(), uint64(seq), seqPayload(i, seq))); err != nil {
					errs <- err
					return
				}
			}
			for range perSender {
				d, _, err := r.NextDelivery()
				if err != nil || d.Status != signalv1.DeliveryStatus_DELIVERY_STATUS_QUEUED {
					errs <- fmt.Errorf("delivery %v, %v", d, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	next := make([]uint32, senders)
	for _, m := range in.wait(t, senders*perSender) {
		i, seq := binary.BigEndian.Uint32(m.payload), binary.BigEndian.Uint32(m.payload[4:])
		if seq != next[i] {
			t.Fatalf("sender %d: got #%d, want #%d", i, seq, next[i])
		}
		next[i]++
	}
}

func TestSlowConsumerDoesNotStallOthers(t *testing.T) {
	h := signaltest.Start(t, signaltest.Options{Signal: signal.Options{
		// A queue long enough that scheduling hiccups on a busy machine do
		// not fill the fast peer's.
		MaxMessageBytes: 64 << 10, QueueLen: 64, RatePerSecond: 1e6, Burst: 1e6,
	}})
	slow := h.Register(t, keys.Private{}) // registered, never reads again
	in := newInbox()
	fast := h.Peer(t, signaltest.PeerOptions{OnMessage: in.add})
	a := h.Peer(t, signaltest.PeerOptions{})

	// Fill the slow peer's HTTP/2 window and then its queue.
	big := make([]byte, 60<<10)
	full := false
	for i := 0; i < 2000 && !full; i++ {
		err := a.Send(ctx(t), slow.Key.Public(), big)
		switch {
		case errors.Is(err, signalclient.ErrQueueFull):
			full = true
		case err != nil:
			t.Fatalf("send %d to the slow peer: %v", i, err)
		}
	}
	if !full {
		t.Fatal("the slow peer's queue never filled")
	}
	// The slow peer is stuck, the fast one gets everything.
	// On a loaded machine the fast peer's writer may fall behind for a
	// moment; a full queue then is its own, and clears.
	const n = 100
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for i := range n {
		err := a.Send(ctx(t), fast.PublicKey(), seqPayload(0, i))
		for try := 0; errors.Is(err, signalclient.ErrQueueFull) && try < 5000; try++ {
			<-tick.C
			err = a.Send(ctx(t), fast.PublicKey(), seqPayload(0, i))
		}
		if err != nil {
			t.Fatalf("send %d to the fast peer: %v", i, err)
		}
	}
	for i, m := range in.wait(t, n) {
		if !bytes.Equal(m.payload, seqPayload(0, i)) {
			t.Fatalf("fast peer: message %d is %x", i, m.payload)
		}
	}
	if err := a.Send(ctx(t), slow.Key.Public(), []byte("x")); !errors.Is(err, signalclient.ErrQueueFull) {
		t.Fatalf("slow peer: %v, want ErrQueueFull", err)
	}
}

func TestConcurrentSendsAreBatchedInOrder(t *testing.T) {
	const senders, perSender = 32, 50
	h := signaltest.Start(t, signaltest.Options{Signal: signal.Options{QueueLen: senders * perSender, RatePerSecond: 1e6, Burst: 1e6}})
	in := newInbox()
	b := h.Peer(t, signaltest.PeerOptions{OnMessage: in.add})
	a := h.Peer(t, signaltest.PeerOptions{})
	var wg sync.WaitGroup
	for i := range senders {
		wg.Go(func() {
			for seq := range perSender {
				if err := a.Send(ctx(t), b.PublicKey(), seqPayload(i, seq)); err != nil {
					t.Errorf("sender %d: %v", i, err)
					return
				}
			}
		})
	}
	wg.Wait()
	next := make([]uint32, senders)
	for _, m := range in.wait(t, senders*perSender) {
		i, seq := binary.BigEndian.Uint32(m.payload), binary.BigEndian.Uint32(m.payload[4:])
		if seq != next[i] {
			t.Fatalf("sender %d: got #%d, want #%d", i, seq, next[i])
		}
		next[i]++
	}
	// 32 senders on one stream: some envelopes must have shared a write.
	if s := h.Signal.Stats(); s.Batched == 0 || s.Writes >= s.Sent+s.Queued {
		t.Fatalf("stats %+v: no batching either way", s)
	}
}

// A peer that says it understands ServerBatch.queued gets its QUEUED
// answers as ids there; an older one gets a Delivery for each, as before.
// Refusals are whole Deliveries for both.
func TestQueuedAnswersAreIDsForPeersThatAcceptThem(t *testing.T) {
	h := signaltest.Start(t, signaltest.Options{})
	b := h.Peer(t, signaltest.PeerOptions{})
	offline, _ := keys.Generate()
	off, to := offline.Public(), b.PublicKey()
	for _, tc := range []struct{ batches, ids bool }{{false, false}, {true, false}, {true, true}} {
		t.Run(fmt.Sprintf("batches=%v/queued_ids=%v", tc.batches, tc.ids), func(t *testing.T) {
			r := h.RegisterAccepting(t, keys.Private{}, tc.batches, tc.ids)
			batch := &signalv1.ClientBatch{Envelopes: []*signalv1.Envelope{
				r.Seal(to, 1, []byte("a")),
				r.Seal(off, 2, []byte("b")),
				r.Seal(to, 3, []byte("c")),
			}}
			if err := r.Send(&signalv1.ClientMessage{Msg: &signalv1.ClientMessage_Batch{Batch: batch}}); err != nil {
				t.Fatal(err)
			}
			asID := map[uint64]bool{}
			whole := map[uint64]*signalv1.Delivery{}
			for i := 0; i < 100 && len(asID)+len(whole) < 3; i++ {
				m, err := r.Stream.Receive()
				if err != nil {
					t.Fatal(err)
				}
				if d := m.GetDelivery(); d != nil {
					whole[d.Id] = d
				}
				if !tc.batches && m.GetBatch() != nil {
					t.Fatalf("a batch for a peer that does not accept batches: %v", m)
				}
				for _, d := range m.GetBatch().GetDeliveries() {
					whole[d.Id] = d
				}
				for _, id := range m.GetBatch().GetQueued() {
					asID[id] = true
				}
			}
			if d := whole[2]; d == nil || d.Status != signalv1.DeliveryStatus_DELIVERY_STATUS_NOT_CONNECTED || d.Message == "" || !bytes.Equal(d.To, off[:]) {
				t.Fatalf("answer to the envelope for the offline peer: %v", d)
			}
			for _, id := range []uint64{1, 3} {
				d := whole[id]
				switch {
				case tc.ids && (!asID[id] || d != nil):
					t.Fatalf("envelope %d: queued id %v, delivery %v; want the id alone", id, asID[id], d)
				case !tc.ids && (asID[id] || d == nil || d.Status != signalv1.DeliveryStatus_DELIVERY_STATUS_QUEUED || !bytes.Equal(d.To, to[:])):
					t.Fatalf("envelope %d: queued id %v, delivery %v; want a QUEUED delivery", id, asID[id], d)
				}
			}
		})
	}
}

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func TestRateLimit(t *testing.T) {
	clk := &clock{t: time.Unix(1_700_000_000, 0)}
	h := signaltest.Start(t, signaltest.Options{Signal: signal.Options{RatePerSecond: 2, Burst: 3, Now: clk.now}})
	a := h.Peer(t, signaltest.PeerOptions{})
	b := h.Peer(t, signaltest.PeerOptions{})
	for i := range 3 {
		if err := a.Send(ctx(t), b.PublicKey(), []byte("x")); err != nil {
			t.Fatalf("send %d within burst: %v", i, err)
		}
	}
	err := a.Send(ctx(t), b.PublicKey(), []byte("x"))
	var de *signalclient.DeliveryError
	if !errors.Is(err, signalclient.ErrRateLimited) || !errors.As(err, &de) || de.RetryAfter != 500*time.Millisecond {
		t.Fatalf("send beyond burst: %v, want ErrRateLimited with retry after 500ms", err)
	}
	// Reconnecting does not refill the bucket.
	a.Stop()
	a2 := h.Peer(t, signaltest.PeerOptions{Key: a.Key})
	if err := a2.Send(ctx(t), b.PublicKey(), []byte("x")); !errors.Is(err, signalclient.ErrRateLimited) {
		t.Fatalf("after reconnecting: %v, want ErrRateLimited", err)
	}
	clk.add(500 * time.Millisecond)
	if err := a2.Send(ctx(t), b.PublicKey(), []byte("x")); err != nil {
		t.Fatalf("after waiting: %v", err)
	}
	if s := h.Signal.Stats(); s.RateLimited != 2 || s.Queued != 4 {
		t.Fatalf("stats %+v", s)
	}
}

func TestSizeLimitAndMalformedEnvelopes(t *testing.T) {
	h := signaltest.Start(t, signaltest.Options{Signal: signal.Options{MaxMessageBytes: 256}})
	b := h.Peer(t, signaltest.PeerOptions{})
	a := h.Peer(t, signaltest.PeerOptions{})
	// The client knows the limit from Registered and refuses at once.
	if err := a.Send(ctx(t), b.PublicKey(), make([]byte, 256)); !errors.Is(err, signalclient.ErrTooLarge) {
		t.Fatalf("client: %v, want ErrTooLarge", err)
	}
	if err := a.Send(ctx(t), b.PublicKey(), make([]byte, 256-seal.Overhead)); err != nil {
		t.Fatalf("largest allowed payload: %v", err)
	}
	r := h.Register(t, keys.Private{})
	for _, tt := range []struct {
		name string
		env  *signalv1.Envelope
		want signalv1.DeliveryStatus
	}{
		{"too large", r.Seal(b.PublicKey(), 1, make([]byte, 300)), signalv1.DeliveryStatus_DELIVERY_STATUS_TOO_LARGE},
		{"short to", &signalv1.Envelope{To: []byte{1, 2}, Id: 2, Nonce: make([]byte, 24)}, signalv1.DeliveryStatus_DELIVERY_STATUS_INVALID},
		{"short nonce", &signalv1.Envelope{To: b.PublicKey().Bytes()[:], Id: 3, Nonce: []byte{1}}, signalv1.DeliveryStatus_DELIVERY_STATUS_INVALID},
	} {
		if err := r.SendEnvelope(tt.env); err != nil {
			t.Fatal(err)
		}
		d, _, err := r.NextDelivery()
		if err != nil || d.Status != tt.want || d.Id != tt.env.Id || d.Message == "" {
			t.Fatalf("%s: delivery %v, %v; want %s with an explanation", tt.name, d, err, tt.want)
		}
	}
}

func TestHeartbeatsKeepLiveStreamsAndDropDeadOnes(t *testing.T) {
	const interval = 50 * time.Millisecond
	h := signaltest.Start(t, signaltest.Options{Signal: signal.Options{HeartbeatInterval: interval}})
	live := h.Peer(t, signaltest.PeerOptions{})
	registered := h.Signal.Stats().Registered
	silent := h.Register(t, keys.Private{}) // reads, but never sends a heartbeat
	var err error
	heartbeats := 0
	for range 10_000 {
		var m *signalv1.ServerMessage
		if m, err = silent.Stream.Receive(); err != nil {
			break
		}
		if m.GetHeartbeat() != nil {
			heartbeats++
		}
	}
	if connect.CodeOf(err) != connect.CodeDeadlineExceeded || heartbeats < 2 {
		t.Fatalf("silent stream ended with %v after %d heartbeats; want deadline exceeded after >= 2", err, heartbeats)
	}
	// The client that was there all along kept its stream by heartbeats.
	if st := live.State(); st.State != signalclient.Connected || h.Signal.Stats().Registered != registered+1 {
		t.Fatalf("live client %+v, registrations %d; it should have kept its one stream", st, h.Signal.Stats().Registered)
	}
	testutil.WaitFor(t, 10*time.Second, "the dead stream to be offline", func() bool {
		return errors.Is(live.Send(ctx(t), silent.Key.Public(), []byte("x")), signalclient.ErrNotConnected)
	})
}

func TestRecipientRefusesReplayedTamperedAndMisaddressed(t *testing.T) {
	h := signaltest.Start(t, signaltest.Options{})
	in := newInbox()
	b := h.Peer(t, signaltest.PeerOptions{OnMessage: in.add})
	a := h.Register(t, keys.Private{})
	c := h.Register(t, keys.Private{})

	env := a.Seal(b.PublicKey(), 1, []byte("once"))
	tampered := a.Seal(b.PublicKey(), 2, []byte("tampered"))
	tampered.Sealed[len(tampered.Sealed)-1] ^= 1
	forged := a.Seal(b.PublicKey(), 3, []byte("sealed by a, sent by c")) // signal stamps c as sender
	last := a.Seal(b.PublicKey(), 4, []byte("last"))
	for _, s := range []struct {
		r   *signaltest.Raw
		env *signalv1.Envelope
	}{{a, env}, {a, env}, {a, tampered}, {c, forged}, {a, last}} {
		if err := s.r.SendEnvelope(s.env); err != nil {
			t.Fatal(err)
		}
		if d, _, err := s.r.NextDelivery(); err != nil || d.Status != signalv1.DeliveryStatus_DELIVERY_STATUS_QUEUED {
			t.Fatalf("delivery %v, %v", d, err)
		}
	}
	got := in.wait(t, 2)
	if string(got[0].payload) != "once" || string(got[1].payload) != "last" || got[1].from != a.Key.Public() {
		t.Fatalf("got %q, %q", got[0].payload, got[1].payload)
	}
	if st := b.State(); st.Rejected != 3 || st.Received != 2 {
		t.Fatalf("recipient %+v, want 3 rejected, 2 received", st)
	}
	if in.len() != 2 {
		t.Fatalf("%d messages delivered, want 2", in.len())
	}
}

func TestCloseEndsStreams(t *testing.T) {
	h := signaltest.Start(t, signaltest.Options{})
	p := h.Peer(t, signaltest.PeerOptions{})
	r := h.Register(t, keys.Private{})
	if err := h.Signal.Close(); err != nil {
		t.Fatal(err)
	}
	if s := h.Signal.Stats(); s.Streams != 0 {
		t.Fatalf("%d streams after Close", s.Streams)
	}
	var err error
	for range 1000 {
		if _, err = r.Stream.Receive(); err != nil {
			break
		}
	}
	if connect.CodeOf(err) != connect.CodeUnavailable {
		t.Fatalf("raw stream ended with %v, want unavailable", err)
	}
	testutil.WaitFor(t, 10*time.Second, "the client to notice", func() bool { return p.State().State != signalclient.Connected })
	if err := p.Send(ctx(t), r.Key.Public(), []byte("x")); !errors.Is(err, signalclient.ErrDisconnected) {
		t.Fatalf("send while disconnected: %v, want ErrDisconnected", err)
	}
}

func TestNoGoroutinesLeftAfterStreamsClose(t *testing.T) {
	h := signaltest.Start(t, signaltest.Options{})
	baseline := goleak.IgnoreCurrent()
	in := newInbox()
	b := h.Peer(t, signaltest.PeerOptions{OnMessage: in.add})
	for i := range 10 {
		a := h.Peer(t, signaltest.PeerOptions{})
		if err := a.Send(ctx(t), b.PublicKey(), seqPayload(i, 0)); err != nil {
			t.Fatal(err)
		}
		a.Stop()
	}
	in.wait(t, 10)
	r := h.Register(t, keys.Private{}) // cut off without closing its side
	r2 := h.Register(t, r.Key)         // replaces r
	r.Close()
	r2.Close()
	dead := h.Dial(t) // never registers
	if _, err := dead.Hello(b.PublicKey()); err != nil {
		t.Fatal(err)
	}
	dead.Close()
	b.Stop()
	goleak.VerifyNone(t, baseline)
}
