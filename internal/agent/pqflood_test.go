package agent

import (
	"strings"
	"testing"
	"time"

	peerv1 "meshd/api/peer/v1"
	"meshd/internal/pqpsk"
	"meshd/wg"
)

// countPQ drains the worker's queue and counts its post-quantum messages
// of step s.
func (f *pqFixture) countPQ(s peerv1.Step) int {
	n := 0
	for {
		select {
		case m := <-f.w.out:
			if m.GetPostQuantum().GetStep() == s {
				n++
			}
		default:
			return n
		}
	}
}

// TestPQResponderBoundsExchangeStarts: a remote that floods the responder
// with exchange starts of ever new epochs (each one an ML-KEM key
// generation and encapsulation here) gets at most one answered per quarter
// retry interval; a retransmission is still answered, and a start after
// the interval goes through.
func TestPQResponderBoundsExchangeStarts(t *testing.T) {
	t0 := time.Unix(1_800_000_000, 0)
	f := newPQFixture(t, pqPermissive, true, t0)
	f.countPQ(peerv1.Step_STEP_REQUEST)
	var last *peerv1.PostQuantum
	for e := uint64(1); e <= 50; e++ {
		m, err := f.remote.Start(e)
		if err != nil {
			t.Fatal(err)
		}
		if e == 1 {
			last = m
		}
		f.w.pqMessage(m, t0.Add(time.Duration(e)*time.Millisecond))
	}
	if n := f.countPQ(peerv1.Step_STEP_REPLY); n != 1 {
		t.Fatalf("%d of 50 exchange starts within 50 ms answered, want 1", n)
	}
	// The first start's retransmission is answered again (no new work).
	f.w.pqMessage(last, t0.Add(60*time.Millisecond))
	if n := f.countPQ(peerv1.Step_STEP_REPLY); n != 1 {
		t.Fatalf("a retransmission got %d answers, want 1", n)
	}
	f.remote.Abort()
	f.rotate(t, 100, t0.Add(f.w.pq.timing.Retry))
}

// TestPQInitiatorBoundsExchangeStarts: a remote that makes the initiator
// start exchange after exchange (by answering at once with a bad
// confirmation, and asking for a new session) gets at most one start per
// half retry interval.
func TestPQInitiatorBoundsExchangeStarts(t *testing.T) {
	t0 := time.Unix(1_800_000_000, 0)
	f := newPQFixture(t, pqPermissive, true, t0)
	// Swap the sides: the worker initiates.
	f.w.key, f.w.env.self = f.w.env.self, f.w.key
	if err := f.dev.SetPeer(wg.Peer{PublicKey: f.w.key}); err != nil {
		t.Fatal(err)
	}
	f.w.pqInit(true, &PQTiming{Rotate: time.Minute, Grace: 15 * time.Second, Fallback: 30 * time.Second}, pqPermissive, t0)
	f.remote = pqpsk.NewPair(f.w.key, f.w.env.self)
	if !f.w.pq.pair.Initiator() {
		t.Fatal("the worker should initiate")
	}
	starts := 0
	for i := range 50 {
		now := t0.Add(time.Duration(i) * time.Millisecond)
		f.w.pq.nextStart = now // what a remote's request for a first session does
		f.w.pqTick(now)
		var init *peerv1.PostQuantum
		for {
			select {
			case m := <-f.w.out:
				if pq := m.GetPostQuantum(); pq.GetStep() == peerv1.Step_STEP_INIT {
					init = pq
				}
				continue
			default:
			}
			break
		}
		if init == nil {
			continue
		}
		starts++
		out, err := f.remote.Handle(init)
		if err != nil {
			t.Fatal(err)
		}
		f.w.pqMessage(out.Send, now) // the worker decapsulates, encapsulates
		bad := &peerv1.PostQuantum{Step: peerv1.Step_STEP_DONE, Epoch: init.GetEpoch(), From: f.w.key[:], To: f.w.env.self[:], Confirm: make([]byte, 32)}
		f.w.pqMessage(bad, now) // refused: the exchange is given up
		if f.w.pq.pair.InFlight() {
			t.Fatal("a failed confirmation left the exchange in flight")
		}
	}
	if starts != 1 {
		t.Fatalf("%d exchanges started within 50 ms, want 1", starts)
	}
}

// TestPQStrictPeerThatNeverFinishes: in strict mode a remote that says it
// supports post-quantum keys but never finishes an exchange stays cut off
// (a random key on the device), status says why after the fallback time,
// and this side's state stays one exchange however long it goes on.
func TestPQStrictPeerThatNeverFinishes(t *testing.T) {
	t0 := time.Unix(1_800_000_000, 0)
	f := newPQFixture(t, pqStrict, true, t0)
	random := f.dev.key(f.w.key)
	if random == nil {
		t.Fatal("strict mode without a key on the device")
	}
	// The remote starts exchanges and abandons each after the INIT.
	for e := uint64(1); e <= 20; e++ {
		now := t0.Add(time.Duration(e) * 5 * time.Second)
		m, _ := f.remote.Start(e)
		f.w.pqMessage(m, now)
		f.w.pqTick(now)
		f.remote.Abort()
	}
	now := t0.Add(101 * time.Second)
	f.w.pqTick(now)
	if k := f.dev.key(f.w.key); k == nil || *k != *random {
		t.Fatalf("device holds %x, want the random key", k)
	}
	if s := f.w.pqSnapshot(); s.on || !strings.Contains(s.reason, "required (strict): not connected") {
		t.Fatalf("status %+v", s)
	}
	if n := f.countPQ(peerv1.Step_STEP_REPLY); n != 20 {
		t.Fatalf("%d replies, want one per start", n)
	}
	if !f.w.pq.pair.InFlight() || f.w.pq.pair.LastEpoch() != 20 {
		t.Fatal("the state is not the newest exchange alone")
	}
}

// TestPQResponderAnswersAnOldEpochWithItsOwn: an initiator that restarted
// with its clock behind starts below the epochs the responder accepted; the
// responder refuses, asks for an exchange naming its last epoch, and the
// next exchange (above it) installs a key.
func TestPQResponderAnswersAnOldEpochWithItsOwn(t *testing.T) {
	t0 := time.Unix(1_800_000_000, 0)
	f := newPQFixture(t, pqPermissive, true, t0)
	f.countPQ(peerv1.Step_STEP_REQUEST)
	f.rotate(t, 5_000_000, t0)
	f.remote = pqpsk.NewPair(f.w.key, f.w.env.self) // restarted
	t1 := t0.Add(time.Minute)
	m, _ := f.remote.Start(1_000)
	f.w.pqMessage(m, t1)
	req := f.sent(t)
	if req.GetStep() != peerv1.Step_STEP_REQUEST || req.GetEpoch() != 5_000_000 {
		t.Fatalf("answer to an old epoch: %s of epoch %d, want a request naming 5000000", req.GetStep(), req.GetEpoch())
	}
	if _, err := f.remote.Handle(req); err != nil {
		t.Fatal(err)
	}
	f.rotate(t, f.remote.LastEpoch()+1, t1.Add(time.Second))
}
