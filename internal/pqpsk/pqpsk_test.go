package pqpsk

import (
	"bytes"
	"crypto/hmac"
	"crypto/mlkem"
	"crypto/mlkem/mlkemtest"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"google.golang.org/protobuf/proto"

	peerv1 "meshd/api/peer/v1"
	"meshd/internal/keys"
)

func newKeys(tb testing.TB) (init, resp keys.Key) {
	tb.Helper()
	a, err := keys.Generate()
	if err != nil {
		tb.Fatal(err)
	}
	b, err := keys.Generate()
	if err != nil {
		tb.Fatal(err)
	}
	init, resp = a.Public(), b.Public()
	if bytes.Compare(init[:], resp[:]) < 0 {
		init, resp = resp, init
	}
	return init, resp
}

// exchange runs a whole exchange of epoch between i and r and returns the
// key each installed.
func exchange(tb testing.TB, i, r *Pair, epoch uint64) (ki, kr *Key) {
	tb.Helper()
	m, err := i.Start(epoch)
	if err != nil {
		tb.Fatal(err)
	}
	out, err := r.Handle(m)
	if err != nil || out.Send == nil {
		tb.Fatalf("init: %v", err)
	}
	out, err = i.Handle(out.Send)
	if err != nil || out.Send == nil {
		tb.Fatalf("reply: %v", err)
	}
	outR, err := r.Handle(out.Send)
	if err != nil || outR.Ready == nil || outR.Send == nil {
		tb.Fatalf("finish: %v", err)
	}
	outI, err := i.Handle(outR.Send)
	if err != nil || outI.Ready == nil {
		tb.Fatalf("done: %v", err)
	}
	return outI.Ready, outR.Ready
}

func TestExchangeAgrees(t *testing.T) {
	a, b := newKeys(t)
	i, r := NewPair(a, b), NewPair(b, a)
	if !i.Initiator() || r.Initiator() {
		t.Fatal("the larger key must initiate")
	}
	ki, kr := exchange(t, i, r, 7)
	if *ki != *kr || ki.Epoch != 7 || ki.PSK == (PSK{}) {
		t.Fatalf("keys differ or empty: %x/%d vs %x/%d", ki.PSK, ki.Epoch, kr.PSK, kr.Epoch)
	}
	ki2, kr2 := exchange(t, i, r, 8)
	if *ki2 != *kr2 || ki2.PSK == ki.PSK {
		t.Fatal("a rotation must agree on a new key")
	}
	if prev, _ := i.Previous(); prev != *ki {
		t.Fatal("the previous key must stay known")
	}
}

// TestRefusals: tampered, replayed, old-epoch and wrong-peer messages are
// refused with their own error, and the installed key stays.
func TestRefusals(t *testing.T) {
	a, b := newKeys(t)
	i, r := NewPair(a, b), NewPair(b, a)
	k1, _ := exchange(t, i, r, 10)

	keep := func(t *testing.T) {
		t.Helper()
		ci, _ := i.Current()
		cr, _ := r.Current()
		if ci != *k1 || cr != *k1 {
			t.Fatal("the installed key changed")
		}
	}
	t.Run("tampered finish", func(t *testing.T) {
		m, _ := i.Start(11)
		out, _ := r.Handle(m)
		fin, err := i.Handle(out.Send)
		if err != nil {
			t.Fatal(err)
		}
		bad := proto.Clone(fin.Send).(*peerv1.PostQuantum)
		bad.Ciphertext[5] ^= 1 // ML-KEM rejects implicitly: only the tag can tell
		if _, err := r.Handle(bad); !errors.Is(err, ErrTampered) {
			t.Fatalf("got %v, want ErrTampered", err)
		}
		keep(t)
	})
	t.Run("tampered done", func(t *testing.T) {
		m, _ := i.Start(12)
		out, _ := r.Handle(m)
		fin, _ := i.Handle(out.Send)
		done, err := r.Handle(fin.Send)
		if err != nil {
			t.Fatal(err)
		}
		bad := proto.Clone(done.Send).(*peerv1.PostQuantum)
		bad.Confirm[0] ^= 1
		if _, err := i.Handle(bad); !errors.Is(err, ErrTampered) {
			t.Fatalf("got %v, want ErrTampered", err)
		}
		if c, _ := i.Current(); c != *k1 {
			t.Fatal("the initiator's key changed")
		}
		r.Revert() // what the agent does when no handshake completes
		keep(t)
	})
	t.Run("replayed and old epoch", func(t *testing.T) {
		m, _ := i.Start(13)
		if _, err := r.Handle(m); err != nil {
			t.Fatal(err)
		}
		old := proto.Clone(m).(*peerv1.PostQuantum)
		old.Epoch = 9
		if _, err := r.Handle(old); !errors.Is(err, ErrOldEpoch) {
			t.Fatalf("old epoch: got %v", err)
		}
		// The same epoch with another key is a replay, not a retransmission.
		other := proto.Clone(m).(*peerv1.PostQuantum)
		other.EncapsulationKey = append([]byte(nil), other.EncapsulationKey...)
		other.EncapsulationKey[0] ^= 1
		if _, err := r.Handle(other); !errors.Is(err, ErrOldEpoch) {
			t.Fatalf("replay: got %v", err)
		}
		if _, err := i.Start(13); !errors.Is(err, ErrOldEpoch) {
			t.Fatalf("start of a used epoch: got %v", err)
		}
		i.Abort()
		r.Abort()
		keep(t)
	})
	t.Run("wrong peer", func(t *testing.T) {
		c, _ := newKeys(t)
		m, _ := NewPair(c, b).Start(20)
		if _, err := r.Handle(m); !errors.Is(err, ErrWrongPeer) {
			t.Fatalf("got %v, want ErrWrongPeer", err)
		}
		m2, _ := i.Start(21)
		m2.To = c[:]
		if _, err := r.Handle(m2); !errors.Is(err, ErrWrongPeer) {
			t.Fatalf("got %v, want ErrWrongPeer", err)
		}
		i.Abort()
		keep(t)
	})
	t.Run("malformed", func(t *testing.T) {
		m, _ := i.Start(22)
		m.EncapsulationKey = m.EncapsulationKey[:100]
		if _, err := r.Handle(m); !errors.Is(err, ErrMalformed) {
			t.Fatalf("got %v, want ErrMalformed", err)
		}
		i.Abort()
		keep(t)
	})
	// After all that, an exchange still works.
	if ki, kr := exchange(t, i, r, 30); *ki != *kr {
		t.Fatal("no agreement after refusals")
	}
}

// TestRetransmissions: a lost REPLY or DONE is recovered by sending the
// same message again, and the answer is the same.
func TestRetransmissions(t *testing.T) {
	a, b := newKeys(t)
	i, r := NewPair(a, b), NewPair(b, a)
	m, _ := i.Start(5)
	first, _ := r.Handle(m)
	again, err := r.Handle(i.Resend())
	if err != nil || !proto.Equal(first.Send, again.Send) {
		t.Fatalf("INIT again: %v", err)
	}
	fin, _ := i.Handle(first.Send)
	done, err := r.Handle(fin.Send)
	if err != nil || done.Ready == nil {
		t.Fatal(err)
	}
	done2, err := r.Handle(i.Resend()) // DONE lost: FINISH again
	if err != nil || done2.Ready != nil || !proto.Equal(done.Send, done2.Send) {
		t.Fatalf("FINISH again: %v (ready %v)", err, done2.Ready)
	}
	out, err := i.Handle(done2.Send)
	if err != nil || out.Ready == nil || out.Ready.PSK != done.Ready.PSK {
		t.Fatalf("done: %v", err)
	}
}

// hkdfByHand is RFC 5869 written out, to check Derive independently.
func hkdfByHand(ikm, salt []byte, info string) []byte {
	ext := hmac.New(sha256.New, salt)
	ext.Write(ikm)
	prk := ext.Sum(nil)
	exp := hmac.New(sha256.New, prk)
	exp.Write([]byte(info))
	exp.Write([]byte{1})
	return exp.Sum(nil)
}

func TestDeriveIsSymmetricAndDocumented(t *testing.T) {
	a, b := newKeys(t) // a > b
	ssA, ssB := bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 32)
	s1 := Derive(a, b, ssA, ssB, 3)
	s2 := Derive(b, a, ssB, ssA, 3)
	if s1 != s2 {
		t.Fatal("Derive depends on the caller's side")
	}
	salt := append([]byte(Label), b[:]...)
	salt = append(salt, a[:]...)
	salt = binary.BigEndian.AppendUint64(salt, 3)
	want := hkdfByHand(append(append([]byte{}, ssB...), ssA...), salt, "psk")
	if !bytes.Equal(s1.PSK[:], want) {
		t.Fatalf("psk %x, want %x (docs/post-quantum.md)", s1.PSK, want)
	}
	if Derive(a, b, ssA, ssB, 4).PSK == s1.PSK || Derive(a, b, ssB, ssA, 3).PSK == s1.PSK {
		t.Fatal("the epoch and the order of the secrets must matter")
	}
}

// vector is one known-answer test of testdata/vectors.json: a whole
// exchange with fixed ML-KEM seeds and encapsulation randomness.
type vector struct {
	Initiator, Responder             string // WireGuard public keys, hex
	Epoch                            uint64
	SeedInitiator, SeedResponder     string // 64-byte ML-KEM seeds, hex
	RandInitiator, RandResponder     string // 32-byte encapsulation randomness, hex
	SharedInitiator, SharedResponder string // the secret of each side's encapsulation
	PSK                              string
	ConfirmInitiator                 string
	ConfirmResponder                 string
}

func deterministic(p *Pair, seed, random string) {
	s, _ := hex.DecodeString(seed)
	rnd, _ := hex.DecodeString(random)
	p.generate = func() (*mlkem.DecapsulationKey768, error) { return mlkem.NewDecapsulationKey768(s) }
	p.encaps = func(ek *mlkem.EncapsulationKey768) ([]byte, []byte) {
		ss, ct, err := mlkemtest.Encapsulate768(ek, rnd)
		if err != nil {
			panic(err)
		}
		return ss, ct
	}
}

func fill(b byte, n int) string { return hex.EncodeToString(bytes.Repeat([]byte{b}, n)) }

// TestVectors runs the exchanges of testdata/vectors.json; with
// PQPSK_UPDATE=1 it writes the file from fixed inputs instead.
func TestVectors(t *testing.T) {
	file := filepath.Join("testdata", "vectors.json")
	var vs []vector
	if os.Getenv("PQPSK_UPDATE") != "" {
		for n := byte(1); n <= 3; n++ {
			vs = append(vs, vector{
				Initiator: fill(0xf0+n, 32), Responder: fill(0x10+n, 32), Epoch: uint64(n) << 40,
				SeedInitiator: fill(n, 64), SeedResponder: fill(n+0x20, 64),
				RandInitiator: fill(n+0x40, 32), RandResponder: fill(n+0x60, 32),
			})
		}
	} else {
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(b, &vs); err != nil {
			t.Fatal(err)
		}
		if len(vs) == 0 {
			t.Fatal("no vectors")
		}
	}
	for n := range vs {
		v := &vs[n]
		ib, _ := hex.DecodeString(v.Initiator)
		rb, _ := hex.DecodeString(v.Responder)
		ik, rk := keys.Key(ib), keys.Key(rb)
		i, r := NewPair(ik, rk), NewPair(rk, ik)
		deterministic(i, v.SeedInitiator, v.RandInitiator)
		deterministic(r, v.SeedResponder, v.RandResponder)
		// The shared secrets, recomputed outside the state machine.
		dkI, _ := mlkem.NewDecapsulationKey768(must(hex.DecodeString(v.SeedInitiator)))
		dkR, _ := mlkem.NewDecapsulationKey768(must(hex.DecodeString(v.SeedResponder)))
		ssI, _, _ := mlkemtest.Encapsulate768(dkR.EncapsulationKey(), must(hex.DecodeString(v.RandInitiator)))
		ssR, _, _ := mlkemtest.Encapsulate768(dkI.EncapsulationKey(), must(hex.DecodeString(v.RandResponder)))

		m, _ := i.Start(v.Epoch)
		rep, _ := r.Handle(m)
		fin, _ := i.Handle(rep.Send)
		done, err := r.Handle(fin.Send)
		if err != nil {
			t.Fatal(err)
		}
		got := vector{
			Initiator: v.Initiator, Responder: v.Responder, Epoch: v.Epoch,
			SeedInitiator: v.SeedInitiator, SeedResponder: v.SeedResponder,
			RandInitiator: v.RandInitiator, RandResponder: v.RandResponder,
			SharedInitiator: hex.EncodeToString(ssI), SharedResponder: hex.EncodeToString(ssR),
			PSK:              hex.EncodeToString(done.Ready.PSK[:]),
			ConfirmInitiator: hex.EncodeToString(fin.Send.Confirm), ConfirmResponder: hex.EncodeToString(done.Send.Confirm),
		}
		if s := Derive(ik, rk, ssI, ssR, v.Epoch); hex.EncodeToString(s.PSK[:]) != got.PSK {
			t.Fatalf("vector %d: the exchange and Derive disagree", n)
		}
		if os.Getenv("PQPSK_UPDATE") != "" {
			*v = got
		} else if got != *v {
			t.Errorf("vector %d:\n got %+v\nwant %+v", n, got, *v)
		}
	}
	if os.Getenv("PQPSK_UPDATE") != "" {
		b, _ := json.MarshalIndent(vs, "", "  ")
		if err := os.WriteFile(file, append(b, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func must(b []byte, err error) []byte {
	if err != nil {
		panic(err)
	}
	return b
}

// BenchmarkRotation is the CPU of one rotation for one peer: both sides of
// a whole exchange (two key generations, two encapsulations, two
// decapsulations, the KDF), as the two agents together spend it.
func BenchmarkRotation(b *testing.B) {
	x, y := newKeys(b)
	i, r := NewPair(x, y), NewPair(y, x)
	b.ReportAllocs()
	for n := 0; b.Loop(); n++ {
		exchange(b, i, r, uint64(n)+1)
	}
}

// TestRequestLiftsARestartedInitiatorsEpochs: an initiator that restarted
// with its clock behind the epochs the responder accepted is refused, learns
// the responder's last epoch from its request, and its next exchange
// starts above it.
func TestRequestLiftsARestartedInitiatorsEpochs(t *testing.T) {
	a, b := newKeys(t)
	i, r := NewPair(a, b), NewPair(b, a)
	exchange(t, i, r, 5_000_000)
	i = NewPair(a, b) // restarted, its clock behind
	m, _ := i.Start(1_000)
	if _, err := r.Handle(m); !errors.Is(err, ErrOldEpoch) {
		t.Fatalf("got %v, want ErrOldEpoch", err)
	}
	out, err := i.Handle(r.Request("old epoch"))
	if err != nil || !out.Requested {
		t.Fatalf("request: %v", err)
	}
	if i.InFlight() || i.LastEpoch() < 5_000_000 {
		t.Fatalf("after the request: in flight %v, last epoch %d", i.InFlight(), i.LastEpoch())
	}
	if ki, kr := exchange(t, i, r, i.LastEpoch()+1); *ki != *kr {
		t.Fatal("no agreement")
	}
}
