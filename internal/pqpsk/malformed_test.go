package pqpsk

import (
	"crypto/mlkem"
	"math"
	"testing"

	"google.golang.org/protobuf/proto"

	peerv1 "meshd/api/peer/v1"
)

// TestMalformedNeverPanicsNorChangesKeys: wrong lengths for ML-KEM keys and
// ciphertexts (empty, one byte short or long, a whole signal message),
// unknown steps and extreme epochs, in every state of both sides: each is
// refused with an error or ignored, nothing panics, the installed key stays,
// and a real exchange works afterwards.
func TestMalformedNeverPanicsNorChangesKeys(t *testing.T) {
	a, b := newKeys(t)
	i, r := NewPair(a, b), NewPair(b, a)
	k1, _ := exchange(t, i, r, 10)

	sizes := []int{0, 1, mlkem.EncapsulationKeySize768 - 1, mlkem.EncapsulationKeySize768 + 1,
		mlkem.CiphertextSize768 - 1, mlkem.CiphertextSize768 + 1, 31, 33, 16 << 10}
	steps := []peerv1.Step{peerv1.Step_STEP_UNSPECIFIED, peerv1.Step_STEP_REQUEST, peerv1.Step_STEP_INIT,
		peerv1.Step_STEP_REPLY, peerv1.Step_STEP_FINISH, peerv1.Step_STEP_DONE, peerv1.Step(99)}
	// States: idle; the responder after an INIT; the initiator waiting for
	// DONE.
	states := []func(){
		func() {},
		func() {
			m, _ := i.Start(i.LastEpoch() + 1)
			r.Handle(m)
		},
		func() {
			m, _ := i.Start(i.LastEpoch() + 1)
			out, _ := r.Handle(m)
			i.Handle(out.Send)
		},
	}
	fill := func(n int) []byte {
		p := make([]byte, n)
		for j := range p {
			p[j] = byte(j*7 + 3)
		}
		return p
	}
	n := 0
	for _, state := range states {
		for _, to := range []*Pair{i, r} {
			for _, step := range steps {
				for _, size := range sizes {
					for _, epoch := range []uint64{0, 1, to.LastEpoch(), to.LastEpoch() + 1, math.MaxUint64} {
						i.Abort()
						r.Abort()
						state()
						base := &peerv1.PostQuantum{Step: step, Epoch: epoch, From: to.remote[:], To: to.self[:],
							EncapsulationKey: fill(size), Ciphertext: fill(size), Confirm: fill(size)}
						for _, m := range []*peerv1.PostQuantum{base, withField(base, func(m *peerv1.PostQuantum) { m.From = fill(size) }),
							withField(base, func(m *peerv1.PostQuantum) { m.EncapsulationKey = nil }),
							withField(base, func(m *peerv1.PostQuantum) { m.Ciphertext = nil })} {
							out, err := to.Handle(m)
							n++
							if out.Ready != nil {
								t.Fatalf("step %s size %d epoch %d: a key from garbage", step, size, epoch)
							}
							_ = err
						}
					}
				}
			}
		}
	}
	ci, _ := i.Current()
	cr, _ := r.Current()
	if ci != *k1 || cr != *k1 {
		t.Fatal("garbage changed an installed key")
	}
	i.Abort()
	r.Abort()
	if ki, kr := exchange(t, i, r, max(i.LastEpoch(), r.LastEpoch())+1); *ki != *kr {
		t.Fatal("no agreement after garbage")
	}
	t.Logf("%d malformed messages refused", n)
}

func withField(m *peerv1.PostQuantum, f func(*peerv1.PostQuantum)) *peerv1.PostQuantum {
	c := proto.Clone(m).(*peerv1.PostQuantum)
	f(c)
	return c
}

// FuzzHandle: no message makes either side panic or install a key.
func FuzzHandle(f *testing.F) {
	a, b := newKeys(f)
	i, r := NewPair(a, b), NewPair(b, a)
	m, _ := i.Start(5)
	raw, _ := proto.Marshal(m)
	f.Add(raw)
	out, _ := r.Handle(m)
	raw, _ = proto.Marshal(out.Send)
	f.Add(raw)
	f.Fuzz(func(t *testing.T, raw []byte) {
		var m peerv1.PostQuantum
		if proto.Unmarshal(raw, &m) != nil {
			return
		}
		for _, p := range []*Pair{i, r} {
			if out, _ := p.Handle(&m); out.Ready != nil {
				t.Fatal("a key from a fuzzed message")
			}
		}
	})
}
