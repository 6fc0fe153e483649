package signal

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"go.uber.org/zap"

	signalv1 "meshd/api/signal/v1"
	"meshd/internal/keys"
	"meshd/internal/seal"
)

// writeGrace is how long a handler waits for its writer to finish a Send
// before it cuts the stream's writes.
const writeGrace = time.Second

// deliveryQueueLen bounds the Delivery answers waiting for a peer's stream.
// When they fill up (the peer sends but does not read), reading that peer's
// envelopes waits: a peer slows only itself.
const deliveryQueueLen = 64

// stream is one peer's Connect stream. The handler goroutine reads (the
// handshake, then envelopes and heartbeats); one writer goroutine, owned by
// the handler, sends Delivery answers, envelopes from other peers and
// heartbeats. Anything may end the stream with end(reason); the handler then
// stops the writer and returns reason to the peer.
type stream struct {
	srv  *Server
	ctx  context.Context
	bs   *connect.BidiStream[signalv1.ClientMessage, signalv1.ServerMessage]
	ctl  *streamControl
	log  *zap.Logger
	born time.Time

	key       keys.Key
	account   string // from the key's ticket
	bucket    *bucket
	batches   bool // the peer accepts ServerBatch
	queuedIDs bool // and ServerBatch.queued

	envelopes  chan *signalv1.Envelope // from other peers, bounded
	deliveries chan answer             // to this peer's envelopes

	once     sync.Once
	stop     chan struct{} // closed by end
	stopped  atomic.Bool
	reason   error        // set by end before stop is closed
	lastRecv atomic.Int64 // when the peer last sent anything, as ns since born

	watchMu sync.Mutex
	watch   *time.Timer
}

var _ Mailbox = (*stream)(nil)

func (s *Server) serveStream(ctx context.Context, bs *connect.BidiStream[signalv1.ClientMessage, signalv1.ServerMessage]) error {
	ctl, _ := ctx.Value(controlKey{}).(*streamControl)
	if ctl == nil || ctl.rc.SetReadDeadline(time.Time{}) != nil { // no lock needed: the handler runs
		// Without deadlines a stream could not be dropped from outside.
		return connect.NewError(connect.CodeInternal, errors.New("signal: the HTTP server does not support stream deadlines; serve Server.Handler over HTTP/2 without wrapping its ResponseWriter"))
	}
	st := &stream{srv: s, ctx: ctx, bs: bs, ctl: ctl, log: s.log, born: time.Now(), stop: make(chan struct{})}
	if !s.track(st) {
		return errShuttingDown
	}
	defer s.untrack(st)
	stopOnCancel := context.AfterFunc(ctx, func() {
		st.end(connect.NewError(connect.CodeCanceled, context.Cause(ctx)))
	})
	defer stopOnCancel()

	key, err := st.handshake()
	if err != nil {
		s.stats.refused.Add(1)
		s.m.refused(err)
		s.log.Debug("registration refused", zap.String("remote", bs.Peer().Addr), zap.Error(err))
		return err
	}
	st.key = key
	st.log = s.log.With(zap.Stringer("peer", key))
	st.bucket = s.limits.acquire(key, s.opts.Now())
	defer s.limits.release(key)
	st.envelopes = make(chan *signalv1.Envelope, s.opts.QueueLen)
	st.deliveries = make(chan answer, deliveryQueueLen)

	// Attach before answering, so that the peer can be reached the moment
	// it knows it is registered; envelopes wait in the queue meanwhile.
	detach := s.opts.Router.Attach(key, st.account, st)
	defer detach()
	s.stats.registered.Add(1)
	s.m.connected.Add(1)
	defer s.m.connected.Add(-1)
	err = bs.Send(&signalv1.ServerMessage{Msg: &signalv1.ServerMessage_Registered{Registered: &signalv1.Registered{
		HeartbeatIntervalMs: uint32(s.opts.HeartbeatInterval / time.Millisecond),
		MaxMessageBytes:     uint32(s.opts.MaxMessageBytes),
	}}})
	if err != nil {
		st.end(err)
		return st.result()
	}
	st.log.Debug("registered", zap.String("remote", bs.Peer().Addr))
	st.touch()
	st.startWatch()
	defer st.stopWatch()

	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		st.writeLoop()
	}()
	st.end(st.readLoop())
	detach()
	select {
	case <-writerDone:
	case <-time.After(writeGrace):
		st.ctl.stopWrites()
		<-writerDone
	}
	err = st.result()
	st.log.Debug("stream ended", zap.Error(err))
	return err
}

// end stops the stream with reason (nil: the peer closed it); the first call
// wins. It never blocks.
func (st *stream) end(reason error) {
	st.once.Do(func() {
		st.reason = reason
		st.stopped.Store(true)
		close(st.stop)
		st.ctl.stopReads()
	})
}

// result is what the handler returns once the stream has ended.
func (st *stream) result() error {
	<-st.stop
	return st.reason
}

// failed returns why a Receive or Send failed: the reason the stream was
// ended with, if it was, else err.
func (st *stream) failed(err error) error {
	if st.stopped.Load() {
		return st.result()
	}
	return err
}

func (st *stream) handshake() (keys.Key, error) {
	timeout := st.srv.opts.RegisterTimeout
	timer := time.AfterFunc(timeout, func() {
		st.end(connect.NewError(connect.CodeDeadlineExceeded, fmt.Errorf("signal: no registration within %s", timeout)))
	})
	defer timer.Stop()
	key, err := st.register()
	if !timer.Stop() || (err == nil && st.stopped.Load()) {
		return keys.Key{}, st.result()
	}
	return key, err
}

func (st *stream) register() (keys.Key, error) {
	var none keys.Key
	if ok, wait := st.srv.sources.take(st.bs.Peer().Addr, st.srv.opts.Now()); !ok {
		st.srv.stats.sourceLimited.Add(1)
		return none, connect.NewError(connect.CodeResourceExhausted, fmt.Errorf("signal: too many registrations from this address (%g a second, burst %d); retry in %s", st.srv.opts.RegisterRate, st.srv.opts.RegisterBurst, wait.Round(time.Millisecond)))
	}
	msg, err := st.bs.Receive()
	if err != nil {
		return none, st.failed(err)
	}
	key, err := helloKey(msg)
	if err != nil {
		return none, err
	}
	if st.account, err = st.srv.admit(msg.GetHello().GetTicket(), key); err != nil {
		return none, err
	}
	st.batches = msg.GetHello().GetAcceptsBatches()
	st.queuedIDs = st.batches && msg.GetHello().GetAcceptsQueuedIds()
	challenge, _ := st.srv.challenger.Issue(st.srv.opts.Now())
	err = st.bs.Send(&signalv1.ServerMessage{Msg: &signalv1.ServerMessage_Challenge{Challenge: &signalv1.Challenge{
		ServerPublicKey: st.srv.pub[:],
		Challenge:       challenge,
	}}})
	if err != nil {
		return none, st.failed(err)
	}
	msg, err = st.bs.Receive()
	if err != nil {
		return none, st.failed(err)
	}
	if err := st.srv.checkRegister(msg, challenge, key); err != nil {
		if errors.Is(err, seal.ErrProof) {
			st.srv.log.Info("key proof failed", zap.Stringer("claimed", key), zap.String("remote", st.bs.Peer().Addr))
		}
		return none, err
	}
	// Only a proven key clears what signal remembers of its refusals.
	st.srv.refused.forget(key)
	return key, nil
}

// helloKey returns the key a Hello claims.
func helloKey(msg *signalv1.ClientMessage) (keys.Key, error) {
	hello := msg.GetHello()
	if hello == nil {
		return keys.Key{}, connect.NewError(connect.CodeInvalidArgument, errors.New("signal: the first message must be Hello"))
	}
	key, err := keys.FromBytes(hello.PublicKey)
	if err != nil {
		return keys.Key{}, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("signal: hello: public key must be 32 bytes (got %d bytes)", len(hello.PublicKey)))
	}
	if err := key.CheckPublic(); err != nil {
		return keys.Key{}, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("signal: hello: %w; use the key pair meshd generated", err))
	}
	return key, nil
}

// checkRegister checks that msg is a Register proving key for challenge,
// and uses the challenge up.
func (s *Server) checkRegister(msg *signalv1.ClientMessage, challenge []byte, key keys.Key) error {
	reg := msg.GetRegister()
	if reg == nil {
		return connect.NewError(connect.CodeInvalidArgument, errors.New("signal: the second message must be Register"))
	}
	if err := s.challenger.Use(challenge, s.opts.Now()); err != nil {
		return connect.NewError(connect.CodeUnauthenticated, fmt.Errorf("signal: register: %w; reconnect", err))
	}
	if err := seal.VerifyProof(seal.PurposeSignal, challenge, reg.Nonce, reg.Sealed, key, s.priv); err != nil {
		return connect.NewError(connect.CodeUnauthenticated, fmt.Errorf("signal: register: %w: the proof does not show the private key of %s", err, key))
	}
	return nil
}

func (st *stream) readLoop() error {
	emit := func(a answer) bool {
		select {
		case st.deliveries <- a:
			return true
		case <-st.stop:
			return false
		}
	}
	for {
		msg, err := st.bs.Receive()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil // the peer closed its side
			}
			return err
		}
		st.touch()
		if err := st.handle(msg, emit); err != nil {
			return err
		}
		if st.stopped.Load() {
			return nil
		}
	}
}

// handle handles one message of a registered peer, handing each answer to
// emit (which returns false once the stream has ended). An error ends the
// stream.
func (st *stream) handle(msg *signalv1.ClientMessage, emit func(answer) bool) error {
	switch m := msg.Msg.(type) {
	case *signalv1.ClientMessage_Envelope:
		if m.Envelope == nil {
			m.Envelope = &signalv1.Envelope{}
		}
		emit(st.srv.forward(st, m.Envelope))
	case *signalv1.ClientMessage_Batch:
		st.srv.stats.batched.Add(uint64(len(m.Batch.GetEnvelopes())))
		for _, env := range m.Batch.GetEnvelopes() {
			if env == nil {
				env = &signalv1.Envelope{}
			}
			if !emit(st.srv.forward(st, env)) {
				return nil
			}
		}
	case *signalv1.ClientMessage_Heartbeat, nil:
		// Liveness only; nil is a message type this server does not know.
	default:
		return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("signal: unexpected %T after registration", m))
	}
	return nil
}

// Bounds of one ServerBatch.
const (
	maxBatchItems = 128
	maxBatchBytes = 64 << 10
)

// writeLoop sends what the stream has to send. Whatever is queued when it
// writes goes out in one ServerBatch (to a peer that accepts batches), so
// the cost of a write is shared under load and nothing waits when idle.
func (st *stream) writeLoop() {
	hb := time.NewTicker(st.srv.opts.HeartbeatInterval)
	defer hb.Stop()
	heartbeat := &signalv1.ServerMessage{Msg: &signalv1.ServerMessage_Heartbeat{Heartbeat: &signalv1.Heartbeat{}}}
	// Send marshals before it returns, so one of each message serves
	// every write.
	var batch signalv1.ServerBatch
	var (
		oneEnvelope = &signalv1.ServerMessage_Envelope{}
		oneDelivery = &signalv1.ServerMessage_Delivery{}
		batchMsg    = &signalv1.ServerMessage{Msg: &signalv1.ServerMessage_Batch{Batch: &batch}}
		envMsg      = &signalv1.ServerMessage{Msg: oneEnvelope}
		delMsg      = &signalv1.ServerMessage{Msg: oneDelivery}
	)
	for {
		var m *signalv1.ServerMessage
		batch.Envelopes, batch.Deliveries, batch.Queued = batch.Envelopes[:0], batch.Deliveries[:0], batch.Queued[:0]
		select {
		case <-st.stop:
			return
		case a := <-st.deliveries:
			st.addAnswer(&batch, a)
		case e := <-st.envelopes:
			batch.Envelopes = append(batch.Envelopes, e)
		case <-hb.C:
			m = heartbeat
		}
		if m == nil {
			if st.batches {
				// Let whatever else is ready run first: under load it
				// adds to this batch; when idle this returns at once.
				runtime.Gosched()
				st.fill(&batch)
			}
			switch {
			case len(batch.Envelopes)+len(batch.Deliveries)+len(batch.Queued) > 1, len(batch.Queued) == 1:
				m = batchMsg
			case len(batch.Envelopes) == 1:
				oneEnvelope.Envelope, m = batch.Envelopes[0], envMsg
			default:
				oneDelivery.Delivery, m = batch.Deliveries[0], delMsg
			}
			st.srv.stats.sent.Add(uint64(len(batch.Envelopes)))
			st.srv.stats.writes.Add(1)
		}
		err := st.bs.Send(m)
		// Sent (marshalled): let the batch's items go.
		clear(batch.Envelopes)
		clear(batch.Deliveries)
		oneEnvelope.Envelope, oneDelivery.Delivery = nil, nil
		if err != nil {
			st.end(err)
			return
		}
	}
}

// fill adds to b what is queued right now, within the batch bounds:
// answers first, then envelopes (the two lists keep their own order).
// Each queue is polled on its own: a receive from an empty channel that
// does not wait costs no lock, a select over both would lock both.
func (st *stream) fill(b *signalv1.ServerBatch) {
	size := 0
	for _, e := range b.Envelopes {
		size += envelopeSize(e)
	}
	for _, d := range b.Deliveries {
		size += deliverySize(d)
	}
	size += queuedSize * len(b.Queued)
	n := len(b.Envelopes) + len(b.Deliveries) + len(b.Queued)
	for ; n < maxBatchItems && size < maxBatchBytes; n++ {
		var a answer
		got := false
		select {
		case a = <-st.deliveries:
			got = true
		default:
		}
		if !got {
			break
		}
		size += st.addAnswer(b, a)
	}
	for ; n < maxBatchItems && size < maxBatchBytes; n++ {
		var e *signalv1.Envelope
		select {
		case e = <-st.envelopes:
		default:
		}
		if e == nil { // empty (Offer never queues nil)
			return
		}
		b.Envelopes = append(b.Envelopes, e)
		size += envelopeSize(e)
	}
}

// deliverySize is about what d takes on the wire.
func deliverySize(d *signalv1.Delivery) int { return 32 + len(d.To) + len(d.Message) }

// queuedSize is at most what one id in ServerBatch.queued takes.
const queuedSize = 10

// answer is one answer to an envelope of the peer, waiting for the
// writer: a QUEUED answer is the envelope's id and recipient (d nil), which
// goes out as an id alone to a peer that accepts that; any other is whole.
type answer struct {
	id uint64
	to []byte
	d  *signalv1.Delivery
}

// delivery returns a as a whole Delivery.
func (a answer) delivery() *signalv1.Delivery {
	if a.d != nil {
		return a.d
	}
	return &signalv1.Delivery{Id: a.id, To: a.to, Status: signalv1.DeliveryStatus_DELIVERY_STATUS_QUEUED}
}

// addAnswer adds a to b in the form the peer understands and returns about
// how many bytes it adds.
func (st *stream) addAnswer(b *signalv1.ServerBatch, a answer) int {
	if a.d == nil && st.queuedIDs {
		b.Queued = append(b.Queued, a.id)
		return queuedSize
	}
	d := a.delivery()
	b.Deliveries = append(b.Deliveries, d)
	return deliverySize(d)
}

// envelopeSize is about what e takes on the wire.
func envelopeSize(e *signalv1.Envelope) int {
	return 16 + len(e.From) + len(e.To) + len(e.Nonce) + len(e.Sealed)
}

// Offer implements Mailbox.
func (st *stream) Offer(env *signalv1.Envelope) signalv1.DeliveryStatus {
	switch {
	case env == nil: // the writer reads nil as an empty queue
		return signalv1.DeliveryStatus_DELIVERY_STATUS_INVALID
	case st.stopped.Load():
		return signalv1.DeliveryStatus_DELIVERY_STATUS_NOT_CONNECTED
	}
	select {
	case st.envelopes <- env:
		return signalv1.DeliveryStatus_DELIVERY_STATUS_QUEUED
	default:
		return signalv1.DeliveryStatus_DELIVERY_STATUS_QUEUE_FULL
	}
}

// Replaced implements Mailbox.
func (st *stream) Replaced() {
	st.srv.stats.replaced.Add(1)
	st.log.Debug("replaced by a newer stream")
	st.end(errReplaced)
}

func (st *stream) touch() { st.lastRecv.Store(int64(time.Since(st.born))) }

// startWatch arms the dead-stream check: a stream from which nothing (not
// even a heartbeat) arrived for MissedHeartbeats intervals is dropped. It
// runs on a timer, so a writer stuck in Send does not delay it.
func (st *stream) startWatch() {
	st.watchMu.Lock()
	defer st.watchMu.Unlock()
	st.watch = time.AfterFunc(st.srv.opts.HeartbeatInterval, st.checkAlive)
}

func (st *stream) checkAlive() {
	interval := st.srv.opts.HeartbeatInterval
	silent := time.Since(st.born) - time.Duration(st.lastRecv.Load())
	if silent > MissedHeartbeats*interval {
		st.end(connect.NewError(connect.CodeDeadlineExceeded, fmt.Errorf("signal: nothing from the peer for %s (heartbeat every %s); dropping the stream", silent.Round(time.Millisecond), interval)))
		return
	}
	st.watchMu.Lock()
	defer st.watchMu.Unlock()
	if !st.stopped.Load() {
		st.watch.Reset(interval)
	}
}

func (st *stream) stopWatch() {
	st.watchMu.Lock()
	defer st.watchMu.Unlock()
	st.watch.Stop()
}

// forward checks one envelope from st, routes it and returns the answer.
// A QUEUED answer (the common one) allocates nothing.
func (s *Server) forward(st *stream, env *signalv1.Envelope) answer {
	var (
		status signalv1.DeliveryStatus
		msg    string
		retry  uint32
	)
	to, err := keys.FromBytes(env.To)
	if err == nil {
		err = to.CheckPublic()
	}
	switch {
	case err != nil:
		status = signalv1.DeliveryStatus_DELIVERY_STATUS_INVALID
		msg = fmt.Sprintf("envelope: \"to\" must be a valid 32-byte public key (got %d bytes): %v", len(env.To), err)
	case len(env.Nonce) != seal.NonceLen:
		status = signalv1.DeliveryStatus_DELIVERY_STATUS_INVALID
		msg = fmt.Sprintf("envelope: nonce must be %d bytes, got %d", seal.NonceLen, len(env.Nonce))
	case len(env.Sealed) > s.opts.MaxMessageBytes:
		status = signalv1.DeliveryStatus_DELIVERY_STATUS_TOO_LARGE
		msg = fmt.Sprintf("envelope: sealed payload is %d bytes, the limit is %d", len(env.Sealed), s.opts.MaxMessageBytes)
	default:
		if ok, wait := s.limits.take(st.bucket, s.opts.Now()); !ok {
			status = signalv1.DeliveryStatus_DELIVERY_STATUS_RATE_LIMITED
			msg = fmt.Sprintf("rate limit of %g envelopes/s (burst %d) exceeded; retry in %s", s.opts.RatePerSecond, s.opts.Burst, wait.Round(time.Millisecond))
			retry = uint32(min(math.Ceil(float64(wait)/float64(time.Millisecond)), math.MaxUint32))
			break
		}
		env.From = st.key[:]
		status = s.opts.Router.Route(st.ctx, st.account, to, env)
		switch status {
		case signalv1.DeliveryStatus_DELIVERY_STATUS_NOT_CONNECTED:
			msg = "peer is not connected to signal"
			if why := s.refused.why(to, st.account); why != "" {
				msg += "; signal refused its registration: " + why
			}
		case signalv1.DeliveryStatus_DELIVERY_STATUS_QUEUE_FULL:
			msg = "peer's queue is full (it is not reading); retry later"
		case signalv1.DeliveryStatus_DELIVERY_STATUS_TOO_LARGE:
			msg = fmt.Sprintf("envelope: sealed payload is %d bytes; the peer is registered at another signal instance, where the limit is %d", len(env.Sealed), MaxRemoteMessageBytes)
		}
	}
	s.stats.count(status)
	if status == signalv1.DeliveryStatus_DELIVERY_STATUS_QUEUED {
		return answer{id: env.Id, to: env.To}
	}
	return answer{d: &signalv1.Delivery{Id: env.Id, To: env.To, Status: status, Message: msg, RetryAfterMs: retry}}
}
