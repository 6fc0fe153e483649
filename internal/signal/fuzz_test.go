package signal

import (
	"bytes"
	"context"
	"testing"
	"time"

	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	signalv1 "meshd/api/signal/v1"
	"meshd/internal/keys"
	"meshd/internal/seal"
)

// recorder is a Mailbox that keeps what it is offered.
type recorder struct{ got []*signalv1.Envelope }

func (r *recorder) Offer(env *signalv1.Envelope) signalv1.DeliveryStatus {
	r.got = append(r.got, env)
	return signalv1.DeliveryStatus_DELIVERY_STATUS_QUEUED
}
func (r *recorder) Replaced() {}

// FuzzClientMessage feeds arbitrary bytes, decoded as a client message, to
// everything the server does with a message: the Hello and Register checks
// of the handshake and the handling of a registered peer's messages. It must
// never panic, never register a key without a proof, and forward only
// well-formed envelopes stamped with the sender's key.
func FuzzClientMessage(f *testing.F) {
	sender, _ := keys.Generate()
	recipient, _ := keys.Generate()
	b, err := seal.NewBox(sender, recipient.Public())
	if err != nil {
		f.Fatal(err)
	}
	sealed, nonce := b.SealMessage([]byte("candidate"), time.Now())
	to := recipient.Public()
	for _, m := range []*signalv1.ClientMessage{
		{Msg: &signalv1.ClientMessage_Envelope{Envelope: &signalv1.Envelope{To: to[:], Id: 7, Nonce: nonce[:], Sealed: sealed}}},
		{Msg: &signalv1.ClientMessage_Envelope{Envelope: &signalv1.Envelope{To: to[:1], Nonce: nonce[:3]}}},
		{Msg: &signalv1.ClientMessage_Hello{Hello: &signalv1.Hello{PublicKey: to[:]}}},
		{Msg: &signalv1.ClientMessage_Register{Register: &signalv1.Register{Nonce: nonce[:], Sealed: sealed}}},
		{Msg: &signalv1.ClientMessage_Heartbeat{Heartbeat: &signalv1.Heartbeat{}}},
		{Msg: &signalv1.ClientMessage_Batch{Batch: &signalv1.ClientBatch{Envelopes: []*signalv1.Envelope{
			{To: to[:], Id: 8, Nonce: nonce[:], Sealed: sealed}, {To: to[:5], Id: 9}, {}, {To: to[:], Id: 10, Nonce: nonce[:], Sealed: make([]byte, 600)},
		}}}},
		{},
	} {
		b, err := proto.Marshal(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{0x1a, 0xff, 0xff, 0xff, 0xff, 0x0f})

	const maxBytes = 512
	rec := &recorder{}
	router := NewLocalRouter()
	router.Attach(to, "", rec)
	s := New(Options{Log: zap.NewNop(), MaxMessageBytes: maxBytes, RatePerSecond: 1e9, Burst: 1e9, Router: router})
	st := &stream{srv: s, ctx: context.Background(), log: zap.NewNop(), stop: make(chan struct{}), key: sender.Public()}
	st.bucket = s.limits.acquire(st.key, time.Now())

	f.Fuzz(func(t *testing.T, b []byte) {
		msg := new(signalv1.ClientMessage)
		if err := proto.Unmarshal(b, msg); err != nil {
			return // connect refuses it before the server sees it
		}
		if k, err := helloKey(msg); err == nil && (k.IsZero() || !bytes.Equal(k[:], msg.GetHello().GetPublicKey())) {
			t.Fatalf("hello accepted with key %s from %x", k, msg.GetHello().GetPublicKey())
		}
		challenge, _ := s.challenger.Issue(time.Now())
		if err := s.checkRegister(msg, challenge, recipient.Public()); err == nil {
			t.Fatal("a registration without the recipient's key was accepted")
		}
		rec.got = rec.got[:0]
		var answers []*signalv1.Delivery
		err := st.handle(msg, func(a answer) bool { answers = append(answers, a.delivery()); return true })
		var envs []*signalv1.Envelope
		switch {
		case msg.GetEnvelope() != nil:
			envs = []*signalv1.Envelope{msg.GetEnvelope()}
		case msg.GetBatch() != nil:
			envs = msg.GetBatch().GetEnvelopes()
		}
		if hs := msg.GetHello() != nil || msg.GetRegister() != nil; hs != (err != nil) {
			t.Fatalf("%v: err %v; want an error for handshake messages only", msg, err)
		}
		if len(answers) != len(envs) {
			t.Fatalf("%d envelopes, %d answers", len(envs), len(answers))
		}
		forwarded := 0
		for i, env := range envs {
			d := answers[i]
			if d.Id != env.GetId() {
				t.Fatalf("answer %d is for id %d, not %d", i, d.Id, env.GetId())
			}
			if d.Status != signalv1.DeliveryStatus_DELIVERY_STATUS_QUEUED {
				if d.Message == "" {
					t.Fatalf("refusal %s without an explanation", d.Status)
				}
				continue
			}
			got := rec.got[forwarded]
			forwarded++
			if got != env || !bytes.Equal(got.From, st.key[:]) || len(got.Sealed) > maxBytes || len(got.Nonce) != seal.NonceLen {
				t.Fatalf("forwarded a bad envelope: %v", got)
			}
		}
		if forwarded != len(rec.got) {
			t.Fatalf("%d queued answers, %d envelopes forwarded", forwarded, len(rec.got))
		}
	})
}
