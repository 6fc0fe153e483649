package signalclient

import (
	"bytes"
	"testing"
	"time"

	signalv1 "meshd/api/signal/v1"
	"meshd/internal/keys"
	"meshd/internal/seal"
)

// FuzzReceive feeds arbitrary envelopes to the client's open path. It must
// never panic, must account for every envelope exactly once (handed over or
// refused), and must hand over only what the claimed sender sealed for this
// client, once.
func FuzzReceive(f *testing.F) {
	me, _ := keys.Generate()
	sender, _ := keys.Generate()
	now := time.Unix(1_700_000_000, 0)
	b, err := seal.NewBox(sender, me.Public())
	if err != nil {
		f.Fatal(err)
	}
	sealed, nonce := b.SealMessage([]byte("ice-ufrag:abcd"), now)
	from := sender.Public()
	f.Add(from[:], nonce[:], sealed)
	f.Add(from[:], nonce[:], sealed[:len(sealed)-1])
	f.Add(from[:5], nonce[:], sealed)
	f.Add([]byte{}, []byte{}, []byte{})
	f.Add(from[:], nonce[:10], sealed)

	c, err := New(Options{URL: "http://127.0.0.1:1", Private: me, Now: func() time.Time { return now }})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, fromB, nonceB, sealedB []byte) {
		before := c.rejected.Load()
		queued := len(c.inbox)
		c.receive(&signalv1.Envelope{From: fromB, Nonce: nonceB, Sealed: sealedB})
		got := len(c.inbox) - queued
		if got+int(c.rejected.Load()-before) != 1 {
			t.Fatalf("envelope handed over %d times and refused %d times", got, c.rejected.Load()-before)
		}
		if got == 1 {
			m := <-c.inbox
			if !bytes.Equal(fromB, from[:]) || !bytes.Equal(nonceB, nonce[:]) || string(m.payload) != "ice-ufrag:abcd" {
				t.Fatalf("accepted an envelope the sender did not seal: from %x nonce %x", fromB, nonceB)
			}
		}
	})
}
