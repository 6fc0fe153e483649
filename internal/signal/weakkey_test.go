package signal_test

import (
	"testing"

	"connectrpc.com/connect"

	signalv1 "meshd/api/signal/v1"
	"meshd/internal/keys"
	"meshd/internal/keys/keystest"
	"meshd/internal/signal/signaltest"
)

// A key of small order could be "proven" by anyone; signal refuses it in
// Hello, before any challenge, and refuses it as an envelope's recipient.
func TestWeakKeysRefused(t *testing.T) {
	h := signaltest.Start(t, signaltest.Options{})
	for _, weak := range keystest.Weak() {
		r := h.Dial(t)
		if _, err := r.Hello(weak); connect.CodeOf(err) != connect.CodeInvalidArgument {
			t.Errorf("hello as %x: %v, want invalid argument", weak, err)
		}
		r.Close()
	}
	if s := h.Signal.Stats(); s.Registered != 0 {
		t.Fatalf("%d weak keys registered", s.Registered)
	}

	r := h.Register(t, keys.Private{})
	for i, weak := range keystest.Weak() {
		env := &signalv1.Envelope{To: weak[:], Id: uint64(i + 1), Nonce: make([]byte, 24), Sealed: []byte("x")}
		if err := r.SendEnvelope(env); err != nil {
			t.Fatal(err)
		}
		d, _, err := r.NextDelivery()
		if err != nil || d.Status != signalv1.DeliveryStatus_DELIVERY_STATUS_INVALID || d.Id != env.Id {
			t.Fatalf("envelope to %x: delivery %v, %v; want INVALID", weak, d, err)
		}
	}
}
