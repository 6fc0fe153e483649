package agent

import (
	"bytes"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	controlv1 "meshd/api/control/v1"
	peerv1 "meshd/api/peer/v1"
	"meshd/internal/keys"
	"meshd/internal/pqpsk"
	"meshd/wg"
	"meshd/wg/wgtest"
)

// pskDevice is a fake device that keeps the pre-shared keys it is given
// and counts rekeys.
type pskDevice struct {
	*wgtest.Device
	mu     sync.Mutex
	psk    map[keys.Key]*[32]byte
	rekeys int
}

func (d *pskDevice) SetPresharedKey(k keys.Key, psk *[32]byte) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if psk != nil {
		c := *psk
		psk = &c
	}
	d.psk[k] = psk
	return nil
}

func (d *pskDevice) Rekey(keys.Key) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.rekeys++
	return nil
}

func (d *pskDevice) key(k keys.Key) *[32]byte {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.psk[k]
}

var (
	_ wg.PresharedKeyer = (*pskDevice)(nil)
	_ wg.Rekeyer        = (*pskDevice)(nil)
)

// pqFixture is a worker's post-quantum half on a fake device, driven by
// hand with its own clock, and the remote's side of the exchange.
type pqFixture struct {
	w      *peerWorker
	dev    *pskDevice
	remote *pqpsk.Pair
}

// newPQFixture makes the worker the responder (the smaller key).
func newPQFixture(t *testing.T, mode string, remoteOn bool, at time.Time) *pqFixture {
	t.Helper()
	var self, remote keys.Key
	for self == remote || bytes.Compare(self[:], remote[:]) > 0 {
		a, _ := keys.Generate()
		b, _ := keys.Generate()
		self, remote = a.Public(), b.Public()
	}
	dev := &pskDevice{Device: wgtest.New("pq", 1), psk: map[keys.Key]*[32]byte{}}
	if err := dev.SetPeer(wg.Peer{PublicKey: remote}); err != nil {
		t.Fatal(err)
	}
	w := &peerWorker{env: peerEnv{self: self, dev: dev}, key: remote, log: zaptest.NewLogger(t),
		out: make(chan *peerv1.Message, peerOutMax)}
	w.snap.meta = &controlv1.RemotePeer{PostQuantum: remoteOn}
	w.pqInit(true, &PQTiming{Rotate: time.Minute, Grace: 15 * time.Second, Fallback: 30 * time.Second}, mode, at)
	return &pqFixture{w: w, dev: dev, remote: pqpsk.NewPair(remote, self)}
}

// sent returns the next PostQuantum message the worker queued.
func (f *pqFixture) sent(t *testing.T) *peerv1.PostQuantum {
	t.Helper()
	for {
		select {
		case m := <-f.w.out:
			if pq := m.GetPostQuantum(); pq != nil {
				return pq
			}
		default:
			t.Fatal("the worker sent no post-quantum message")
			return nil
		}
	}
}

// rotate runs an exchange of epoch at time at and returns the key.
func (f *pqFixture) rotate(t *testing.T, epoch uint64, at time.Time) [32]byte {
	t.Helper()
	init, err := f.remote.Start(epoch)
	if err != nil {
		t.Fatal(err)
	}
	f.w.pqMessage(init, at)
	out, err := f.remote.Handle(f.sent(t))
	if err != nil {
		t.Fatal(err)
	}
	f.w.pqMessage(out.Send, at)
	done, err := f.remote.Handle(f.sent(t))
	if err != nil || done.Ready == nil {
		t.Fatalf("done: %v", err)
	}
	if k := f.dev.key(f.w.key); k == nil || *k != done.Ready.PSK {
		t.Fatalf("device holds %x, want the agreed %x", k, done.Ready.PSK)
	}
	return done.Ready.PSK
}

// TestPQGraceFallsBackToThePreviousKey: a new key that no handshake
// confirms within the grace is dropped for the previous one; refused
// messages (replayed, tampered) change nothing on the device.
func TestPQGraceFallsBackToThePreviousKey(t *testing.T) {
	t0 := time.Unix(1_800_000_000, 0)
	f := newPQFixture(t, pqPermissive, true, t0)
	if r := f.sent(t); r.GetStep() != peerv1.Step_STEP_REQUEST {
		t.Fatalf("the responder's first message is %s, want a request", r.GetStep())
	}
	if f.dev.key(f.w.key) != nil {
		t.Fatal("a key before any exchange in permissive mode")
	}
	k1 := f.rotate(t, 100, t0)
	f.w.pqHandshake(t0.Add(time.Second)) // a handshake with k1
	f.w.pqTick(t0.Add(20 * time.Second))
	if k := f.dev.key(f.w.key); *k != k1 || !f.w.pqSnapshot().on {
		t.Fatal("a confirmed key was dropped")
	}

	// A replayed INIT of epoch 100 and a tampered FINISH: refused.
	t1 := t0.Add(time.Minute)
	old := f.remote.Request("x") // any message naming the pair; made an INIT of an old epoch
	old.Step, old.Epoch = peerv1.Step_STEP_INIT, 100
	f.w.pqMessage(old, t1)
	if r := f.sent(t); r.GetStep() != peerv1.Step_STEP_REQUEST || r.GetEpoch() != 100 {
		t.Fatalf("answer to an old INIT: %s of epoch %d, want a request naming 100", r.GetStep(), r.GetEpoch())
	}
	init, _ := f.remote.Start(101)
	f.w.pqMessage(init, t1)
	out, _ := f.remote.Handle(f.sent(t))
	bad := out.Send
	bad.Confirm = append([]byte(nil), bad.Confirm...)
	bad.Confirm[0] ^= 1
	f.w.pqMessage(bad, t1)
	if k := f.dev.key(f.w.key); *k != k1 {
		t.Fatal("a refused message changed the key")
	}

	// k2 is agreed, but no handshake comes: back to k1 after the grace.
	f.remote.Abort()
	t2 := t1.Add(time.Second) // the initiator's next start, not at once
	k2 := f.rotate(t, 102, t2)
	f.w.pqTick(t2.Add(10 * time.Second))
	if k := f.dev.key(f.w.key); *k != k2 {
		t.Fatal("dropped before the grace ended")
	}
	f.w.pqTick(t2.Add(16 * time.Second))
	if k := f.dev.key(f.w.key); k == nil || *k != k1 {
		t.Fatalf("after the grace the device holds %x, want the previous key %x", k, k1)
	}
	if f.dev.rekeys == 0 {
		t.Fatal("the responder never asked for a handshake with the unconfirmed key")
	}
}

// TestPQStrictHoldsARandomKey: in strict mode, with a remote that does not
// support post-quantum keys, the device holds a key nobody knows; turning
// strict off removes it.
func TestPQStrictHoldsARandomKey(t *testing.T) {
	t0 := time.Unix(1_800_000_000, 0)
	f := newPQFixture(t, pqStrict, false, t0)
	k := f.dev.key(f.w.key)
	if k == nil || *k == ([32]byte{}) {
		t.Fatal("strict mode without a key on the device")
	}
	if s := f.w.pqSnapshot(); s.on || s.reason == "" {
		t.Fatalf("status %+v: want not post-quantum, with a reason", s)
	}
	f.w.pqConfigure(pqPermissive, false, t0)
	if f.dev.key(f.w.key) != nil {
		t.Fatal("permissive mode kept the random key")
	}
}
