package signaltest

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	"connectrpc.com/connect"

	signalv1 "meshd/api/signal/v1"
	"meshd/api/signal/v1/signalv1connect"
	"meshd/internal/keys"
	"meshd/internal/rpcclient"
	"meshd/internal/seal"
)

// Raw is a stream driven by hand: no heartbeats, no reading unless the test
// reads. Tests use it to play misbehaving peers (wrong proofs, peers that
// never read, replays) that signalclient would never be.
type Raw struct {
	Key    keys.Private
	Stream *connect.BidiStreamForClient[signalv1.ClientMessage, signalv1.ServerMessage]
	cancel context.CancelFunc
	http   *http.Client
	conns  *rpcclient.Conns
	boxes  map[keys.Key]*seal.Box

	// The Hello flags Hello sends (zero: an old peer that takes every
	// answer and envelope as a message of its own).
	AcceptsBatches, AcceptsQueuedIDs bool
	// Ticket is the ticket Hello shows.
	Ticket []byte
}

// Dial opens a stream and sends nothing yet. The test's cleanup closes it.
func (h *Harness) Dial(tb testing.TB) *Raw {
	tb.Helper()
	hc, err := rpcclient.New(h.URL, h.Pin)
	if err != nil {
		tb.Fatal(err)
	}
	cs := rpcclient.Track(hc.Transport.(*http.Transport))
	ctx, cancel := context.WithCancel(context.Background())
	c := signalv1connect.NewSignalServiceClient(hc, h.URL, connect.WithAcceptCompression("gzip", nil, nil))
	r := &Raw{Stream: c.Connect(ctx), cancel: cancel, http: hc, conns: cs}
	tb.Cleanup(r.Close)
	return r
}

// Close ends the stream and closes its connection.
func (r *Raw) Close() {
	r.cancel()
	_ = r.Stream.CloseRequest()
	_ = r.Stream.CloseResponse()
	r.http.CloseIdleConnections()
	r.conns.CloseAll()
}

// Register dials and registers priv (a fresh key when zero) with a correct
// proof.
func (h *Harness) Register(tb testing.TB, priv keys.Private) *Raw {
	tb.Helper()
	return h.RegisterAccepting(tb, priv, false, false)
}

// RegisterAccepting is Register with the Hello flags of a peer that accepts
// ServerBatch and, with queuedIDs, ServerBatch.queued.
func (h *Harness) RegisterAccepting(tb testing.TB, priv keys.Private, batches, queuedIDs bool) *Raw {
	tb.Helper()
	if priv.IsZero() {
		var err error
		if priv, err = keys.Generate(); err != nil {
			tb.Fatal(err)
		}
	}
	r := h.Dial(tb)
	r.Key = priv
	r.AcceptsBatches, r.AcceptsQueuedIDs = batches, queuedIDs
	ch, err := r.Hello(priv.Public())
	if err != nil {
		tb.Fatal(err)
	}
	server, err := keys.FromBytes(ch.ServerPublicKey)
	if err != nil {
		tb.Fatal(err)
	}
	nonce, sealed, err := seal.Prove(seal.PurposeSignal, ch.Challenge, server, priv)
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := r.Register(nonce[:], sealed); err != nil {
		tb.Fatal(err)
	}
	return r
}

// Hello sends Hello for pub (with r's flags) and returns the challenge.
func (r *Raw) Hello(pub keys.Key) (*signalv1.Challenge, error) {
	hello := &signalv1.Hello{PublicKey: pub[:], AcceptsBatches: r.AcceptsBatches, AcceptsQueuedIds: r.AcceptsQueuedIDs, Ticket: r.Ticket}
	if err := r.Send(&signalv1.ClientMessage{Msg: &signalv1.ClientMessage_Hello{Hello: hello}}); err != nil {
		return nil, err
	}
	m, err := r.Stream.Receive()
	if err != nil {
		return nil, err
	}
	if m.GetChallenge() == nil {
		return nil, fmt.Errorf("expected a challenge, got %v", m)
	}
	return m.GetChallenge(), nil
}

// Register sends a Register message and returns the answer.
func (r *Raw) Register(nonce, sealed []byte) (*signalv1.Registered, error) {
	if err := r.Send(&signalv1.ClientMessage{Msg: &signalv1.ClientMessage_Register{Register: &signalv1.Register{Nonce: nonce, Sealed: sealed}}}); err != nil {
		return nil, err
	}
	m, err := r.Stream.Receive()
	if err != nil {
		return nil, err
	}
	if m.GetRegistered() == nil {
		return nil, fmt.Errorf("expected registered, got %v", m)
	}
	return m.GetRegistered(), nil
}

// Send sends one message.
func (r *Raw) Send(m *signalv1.ClientMessage) error { return r.Stream.Send(m) }

// Seal seals payload for to as signalclient does, and returns the envelope.
// Not safe for concurrent use.
func (r *Raw) Seal(to keys.Key, id uint64, payload []byte) *signalv1.Envelope {
	if r.boxes == nil {
		r.boxes = make(map[keys.Key]*seal.Box)
	}
	box := r.boxes[to]
	if box == nil {
		var err error
		if box, err = seal.NewBox(r.Key, to); err != nil {
			panic("signaltest: " + err.Error()) // tests send to keys they generated
		}
		r.boxes[to] = box
	}
	sealed, nonce := box.SealMessage(payload, time.Now())
	return &signalv1.Envelope{To: to[:], Id: id, Nonce: nonce[:], Sealed: sealed}
}

// SendEnvelope sends env without waiting for the answer.
func (r *Raw) SendEnvelope(env *signalv1.Envelope) error {
	return r.Send(&signalv1.ClientMessage{Msg: &signalv1.ClientMessage_Envelope{Envelope: env}})
}

// NextDelivery reads until a Delivery arrives, skipping heartbeats and
// counting nothing else: envelopes that arrive meanwhile are returned too.
func (r *Raw) NextDelivery() (*signalv1.Delivery, []*signalv1.Envelope, error) {
	var envs []*signalv1.Envelope
	for range 100_000 {
		m, err := r.Stream.Receive()
		if err != nil {
			return nil, envs, err
		}
		switch {
		case m.GetDelivery() != nil:
			return m.GetDelivery(), envs, nil
		case m.GetEnvelope() != nil:
			envs = append(envs, m.GetEnvelope())
		}
	}
	return nil, envs, fmt.Errorf("no delivery in 100000 messages")
}
