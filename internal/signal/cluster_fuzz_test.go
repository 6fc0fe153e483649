package signal

import (
	"bytes"
	"testing"
	"time"

	"go.uber.org/zap"

	signalv1 "meshd/api/signal/v1"
	"meshd/internal/cluster"
	"meshd/internal/keys"
	"meshd/internal/seal"
)

// FuzzClusterPayload feeds arbitrary bus payloads to an instance: it must
// never panic, and hand the recipient only well-formed envelopes addressed
// to it.
func FuzzClusterPayload(f *testing.F) {
	recipient, _ := keys.Generate()
	sender, _ := keys.Generate()
	to, from := recipient.Public(), sender.Public()
	env := &signalv1.Envelope{From: from.Bytes()[:], To: to.Bytes()[:], Id: 7, Nonce: make([]byte, seal.NonceLen), Sealed: []byte("sealed")}
	valid := appendEnvelope([]byte{frameVersion}, "acct", env)
	f.Add(valid)
	f.Add(append(append([]byte(nil), valid...), valid[1:]...))
	f.Add(append([]byte{frameVersion, recAttached, 2, 'i', 'd'}, append(to.Bytes()[:], 4, 'a', 'c', 'c', 't')...))
	f.Add(valid[:len(valid)-3])
	f.Add([]byte{})

	c := cluster.Local()
	r := newClusterRouter(c, zap.NewNop(), time.Now, &remoteCounters{})
	f.Cleanup(func() { r.close(); _ = c.Close() })
	rec := &recorder{}
	f.Fuzz(func(t *testing.T, p []byte) {
		r.local.Attach(to, "acct", rec) // again: an announcement may replace it
		rec.got = rec.got[:0]
		_ = r.receive(p)
		for _, e := range rec.got {
			if len(e.From) != keys.Len || !bytes.Equal(e.To, to.Bytes()[:]) || len(e.Nonce) != seal.NonceLen || len(e.Sealed) > cluster.MaxPayload {
				t.Fatalf("malformed envelope handed over: %v", e)
			}
		}
	})
}
