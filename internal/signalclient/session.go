package signalclient

import (
	"context"
	"errors"
	"fmt"
	"io"
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

// session is one registered stream. Run's goroutine reads it; Send calls
// write to it (one at a time: whoever finds nobody writing writes what has
// queued up meanwhile too, as one ClientBatch); a heartbeat goroutine, owned
// by runSession, keeps it alive and drops it when the server falls silent.
type session struct {
	c      *Client
	ctx    context.Context // ends with the stream
	cancel context.CancelCauseFunc
	bs     *connect.BidiStreamForClient[signalv1.ClientMessage, signalv1.ServerMessage]
	born   time.Time

	maxMessage int
	heartbeat  time.Duration

	lastRecv atomic.Int64 // ns since born

	outMu   sync.Mutex
	out     []*signalv1.Envelope // queued for the writer
	writing bool                 // a caller is writing
	broken  error                // a write failed

	mu      sync.Mutex
	pending map[uint64]chan *signalv1.Delivery
	ended   bool
}

// runSession connects, registers and serves one stream until it ends. It
// reports whether registration succeeded and why the stream ended.
func (c *Client) runSession(ctx context.Context) (registered bool, err error) {
	sctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	s := &session{
		c:       c,
		ctx:     sctx,
		cancel:  cancel,
		bs:      c.rpc.Connect(sctx),
		born:    time.Now(),
		pending: make(map[uint64]chan *signalv1.Delivery),
	}
	// Cancelling the context alone does not end a stream whose request side
	// is idle: closing the request side does.
	stopClose := context.AfterFunc(sctx, func() { _ = s.bs.CloseRequest() })
	defer func() {
		stopClose()
		_ = s.bs.CloseRequest()
		_ = s.bs.CloseResponse()
	}()
	if err := s.handshake(); err != nil {
		return false, err
	}
	c.current.Store(s)
	c.setState(Connected, nil)
	c.log.Info("registered with signal", zap.String("url", c.opts.URL), zap.Stringer("key", c.pub))

	var wg sync.WaitGroup
	wg.Go(s.keepAlive)
	err = s.readLoop()
	s.cancel(err)
	c.current.CompareAndSwap(s, nil)
	s.end()
	wg.Wait()
	return true, err
}

func (s *session) handshake() error {
	timer := time.AfterFunc(HandshakeTimeout, func() {
		s.cancel(fmt.Errorf("signal: no registration within %s", HandshakeTimeout))
	})
	defer timer.Stop()
	c := s.c
	var ticket []byte
	if c.opts.Ticket != nil {
		ticket = c.opts.Ticket()
	}
	hello := &signalv1.Hello{PublicKey: c.pub[:], AcceptsBatches: true, AcceptsQueuedIds: true, Ticket: ticket}
	if err := s.bs.Send(&signalv1.ClientMessage{Msg: &signalv1.ClientMessage_Hello{Hello: hello}}); err != nil {
		return s.failed("hello", s.sendError(err))
	}
	msg, err := s.bs.Receive()
	if err != nil {
		return s.failed("hello", err)
	}
	ch := msg.GetChallenge()
	if ch == nil {
		return fmt.Errorf("signal: hello: expected a challenge, got %T", msg.Msg)
	}
	server, err := keys.FromBytes(ch.ServerPublicKey)
	if err != nil {
		return fmt.Errorf("signal: challenge: server key: %w", err)
	}
	nonce, sealed, err := seal.Prove(seal.PurposeSignal, ch.Challenge, server, c.opts.Private)
	if err != nil {
		return fmt.Errorf("signal: challenge: server key: %w", err)
	}
	if err := s.bs.Send(&signalv1.ClientMessage{Msg: &signalv1.ClientMessage_Register{Register: &signalv1.Register{Nonce: nonce[:], Sealed: sealed}}}); err != nil {
		return s.failed("register", s.sendError(err))
	}
	msg, err = s.bs.Receive()
	if err != nil {
		return s.failed("register", err)
	}
	reg := msg.GetRegistered()
	if reg == nil {
		return fmt.Errorf("signal: register: expected registered, got %T", msg.Msg)
	}
	s.maxMessage = int(reg.MaxMessageBytes)
	if s.maxMessage <= 0 {
		s.maxMessage = defaultMaxMessage
	}
	s.heartbeat = time.Duration(reg.HeartbeatIntervalMs) * time.Millisecond
	if s.heartbeat <= 0 {
		s.heartbeat = defaultHeartbeat
	}
	s.touch()
	return nil
}

// sendError is why a Send failed. A Send fails with io.EOF when the
// server already ended the stream; the server's reason then comes from
// Receive (as Connect documents).
func (s *session) sendError(err error) error {
	if errors.Is(err, io.EOF) {
		if _, rerr := s.bs.Receive(); rerr != nil && !errors.Is(rerr, io.EOF) {
			return rerr
		}
	}
	return err
}

// failed explains why a Send or Receive failed: the server's error, or the
// reason the session was cancelled.
func (s *session) failed(step string, err error) error {
	if cause := context.Cause(s.ctx); cause != nil && s.ctx.Err() != nil {
		if errors.Is(cause, context.Canceled) {
			return cause
		}
		return fmt.Errorf("signal: %s: %w", step, cause)
	}
	switch connect.CodeOf(err) {
	case connect.CodeAborted:
		return fmt.Errorf("%w: %v", ErrReplaced, err)
	case connect.CodePermissionDenied:
		return fmt.Errorf("%w: %v", ErrRefused, err)
	}
	return fmt.Errorf("signal: %s: %w", step, err)
}

func (s *session) readLoop() error {
	for {
		msg, err := s.bs.Receive()
		if err != nil {
			return s.failed("receive", err)
		}
		s.touch()
		switch m := msg.Msg.(type) {
		case *signalv1.ServerMessage_Envelope:
			s.c.receive(m.Envelope)
		case *signalv1.ServerMessage_Delivery:
			s.resolve(m.Delivery)
		case *signalv1.ServerMessage_Batch:
			for _, env := range m.Batch.GetEnvelopes() {
				s.c.receive(env)
			}
			for _, d := range m.Batch.GetDeliveries() {
				s.resolve(d)
			}
			for _, id := range m.Batch.GetQueued() {
				s.resolveID(id, queued)
			}
		case *signalv1.ServerMessage_Heartbeat, nil:
			// Liveness only; nil is a message type this client does not know.
		default:
			return fmt.Errorf("signal: unexpected %T after registration", m)
		}
	}
}

// keepAlive sends a heartbeat every interval and drops the stream when the
// server sent nothing for missedHeartbeats intervals.
func (s *session) keepAlive() {
	t := time.NewTicker(s.heartbeat)
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
		}
		if silent := time.Since(s.born) - time.Duration(s.lastRecv.Load()); silent > missedHeartbeats*s.heartbeat {
			s.cancel(fmt.Errorf("%w for %s", ErrHeartbeat, silent.Round(time.Millisecond)))
			return
		}
		if err := s.write(nil); err != nil {
			return
		}
	}
}

func (s *session) touch() { s.lastRecv.Store(int64(time.Since(s.born))) }

// What a server that does not say assumes.
const (
	defaultMaxMessage = 16 << 10
	defaultHeartbeat  = 10 * time.Second
)

// maxBatchItems bounds one ClientBatch.
const maxBatchItems = 128

var heartbeat = &signalv1.ClientMessage{Msg: &signalv1.ClientMessage_Heartbeat{Heartbeat: &signalv1.Heartbeat{}}}

// write queues env (nil: a heartbeat) and, unless another caller is
// writing already (then that one writes env next, and a heartbeat is moot),
// writes everything queued, in order, batching what queued up meanwhile. A
// failed write ends the session.
func (s *session) write(env *signalv1.Envelope) error {
	s.outMu.Lock()
	if s.broken != nil {
		s.outMu.Unlock()
		return s.broken
	}
	if env != nil {
		s.out = append(s.out, env)
	}
	if s.writing {
		s.outMu.Unlock()
		return nil
	}
	s.writing = true
	beat := env == nil
	if env != nil {
		// Let the other senders that are ready run first: when a batch of
		// answers woke several at once they queue behind this one and go
		// out in the same ClientBatch (one frame, one write, one read at
		// signal); when nobody else is ready this returns at once.
		s.outMu.Unlock()
		runtime.Gosched()
		s.outMu.Lock()
	}
	for {
		var m *signalv1.ClientMessage
		switch n := s.batchLen(); {
		case n == 0 && !beat:
			s.writing = false
			s.outMu.Unlock()
			return nil
		case n == 0:
			m, beat = heartbeat, false
		case n == 1:
			m = &signalv1.ClientMessage{Msg: &signalv1.ClientMessage_Envelope{Envelope: s.out[0]}}
		default:
			m = &signalv1.ClientMessage{Msg: &signalv1.ClientMessage_Batch{Batch: &signalv1.ClientBatch{Envelopes: append([]*signalv1.Envelope(nil), s.out[:n]...)}}}
		}
		if n := s.batchLen(); n > 0 {
			clear(s.out[:n])
			s.out = append(s.out[:0], s.out[n:]...)
		}
		s.outMu.Unlock()
		err := s.bs.Send(m)
		s.outMu.Lock()
		if err != nil {
			s.writing = false
			s.broken = fmt.Errorf("%w: %v", ErrDisconnected, err)
			err = s.broken
			s.outMu.Unlock()
			// The reader sees the server's error and reports it.
			s.cancel(fmt.Errorf("signal: send: %w", err))
			return err
		}
	}
}

// batchLen is how many queued envelopes go into the next write: as many as
// fit the server's message limit, at least one.
func (s *session) batchLen() int {
	size := 0
	for i, e := range s.out {
		size += 16 + len(e.To) + len(e.Nonce) + len(e.Sealed)
		if i == maxBatchItems || (i > 0 && size > s.maxMessage) {
			return i
		}
	}
	return len(s.out)
}

// roundTrip sends an envelope and waits for signal's Delivery answer.
func (s *session) roundTrip(ctx context.Context, env *signalv1.Envelope) (*signalv1.Delivery, error) {
	ch := make(chan *signalv1.Delivery, 1)
	s.mu.Lock()
	if s.ended {
		s.mu.Unlock()
		return nil, ErrDisconnected
	}
	s.pending[env.Id] = ch
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.pending, env.Id)
		s.mu.Unlock()
	}()
	if err := s.write(env); err != nil {
		return nil, err
	}
	select {
	case d := <-ch:
		return d, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-s.ctx.Done():
		// The answer may have come in just before the end.
		select {
		case d := <-ch:
			return d, nil
		default:
			return nil, ErrDisconnected
		}
	}
}

func (s *session) resolve(d *signalv1.Delivery) { s.resolveID(d.Id, d) }

// queued is the answer that ServerBatch.queued stands for; shared, read
// only.
var queued = &signalv1.Delivery{Status: signalv1.DeliveryStatus_DELIVERY_STATUS_QUEUED}

// resolveID hands d to the round trip waiting for the answer to id.
func (s *session) resolveID(id uint64, d *signalv1.Delivery) {
	s.mu.Lock()
	ch := s.pending[id]
	delete(s.pending, id)
	s.mu.Unlock()
	if ch != nil {
		ch <- d // buffered, one answer per id
	}
}

// end refuses new round trips; waiting ones see s.ctx end.
func (s *session) end() {
	s.mu.Lock()
	s.ended = true
	s.mu.Unlock()
}
