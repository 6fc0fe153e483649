package pqpsk

import (
	"bytes"
	"crypto/mlkem"
	"errors"
	"fmt"

	peerv1 "meshd/api/peer/v1"
	"meshd/internal/keys"
)

// Errors Handle returns. Each leaves the installed keys as they were.
var (
	ErrWrongPeer  = errors.New("pqpsk: message names another pair of peers")
	ErrOldEpoch   = errors.New("pqpsk: old or replayed epoch")
	ErrTampered   = errors.New("pqpsk: key confirmation failed (tampered or damaged message)")
	ErrMalformed  = errors.New("pqpsk: malformed message")
	ErrUnexpected = errors.New("pqpsk: message not expected in this state")
)

// Confirmation roles.
const (
	roleInitiator = "initiator"
	roleResponder = "responder"
)

// Key is an installed pre-shared key and its epoch.
type Key struct {
	Epoch uint64
	PSK   PSK
}

// Out is what Handle asks of its caller.
type Out struct {
	// Send, when set, goes to the remote.
	Send *peerv1.PostQuantum
	// Ready, when set, is a new key that both sides derived: install it.
	// The responder learns it on FINISH, the initiator on DONE.
	Ready *Key
	// Requested: the responder asked for an exchange (initiator only).
	Requested bool
}

// Pair is the exchange state between this peer and one remote. The
// initiator is the side with the larger WireGuard public key (the one that
// controls ICE too); it chooses epochs. Not safe for concurrent use: one
// goroutine owns it (the agent's peer worker).
type Pair struct {
	self, remote keys.Key
	initiator    bool
	// encaps and generate are crypto/mlkem's; tests make them
	// deterministic for the vectors.
	encaps   func(*mlkem.EncapsulationKey768) (ss, ct []byte)
	generate func() (*mlkem.DecapsulationKey768, error)

	last uint64 // highest epoch started (initiator) or accepted (responder)

	// The exchange in progress (epoch != 0).
	epoch   uint64
	dk      *mlkem.DecapsulationKey768
	ss      []byte   // responder: the secret of its own encapsulation
	pending *Secrets // initiator: derived, waiting for DONE
	sent    *peerv1.PostQuantum
	// What this side answered last (responder), to answer a
	// retransmission the same way.
	lastIn, lastOut *peerv1.PostQuantum

	cur, prev *Key
}

// NewPair returns the state between self and remote.
func NewPair(self, remote keys.Key) *Pair {
	return &Pair{
		self: self, remote: remote,
		initiator: bytes.Compare(self[:], remote[:]) > 0,
		encaps:    func(ek *mlkem.EncapsulationKey768) ([]byte, []byte) { return ek.Encapsulate() },
		generate:  mlkem.GenerateKey768,
	}
}

// Initiator reports whether this side starts exchanges.
func (p *Pair) Initiator() bool { return p.initiator }

// LastEpoch returns the highest epoch this side started or accepted.
func (p *Pair) LastEpoch() uint64 { return p.last }

// InFlight reports whether an exchange is in progress.
func (p *Pair) InFlight() bool { return p.epoch != 0 }

// Current returns the installed key, if any.
func (p *Pair) Current() (Key, bool) {
	if p.cur == nil {
		return Key{}, false
	}
	return *p.cur, true
}

// Previous returns the key installed before the current one, if any.
func (p *Pair) Previous() (Key, bool) {
	if p.prev == nil {
		return Key{}, false
	}
	return *p.prev, true
}

// Revert drops the current key for the previous one (none when there was
// none): the agent does it when no handshake completes with a new key.
func (p *Pair) Revert() {
	p.cur, p.prev = p.prev, nil
}

// Forget drops every key and the exchange in progress, keeping the epoch
// high-water mark (the agent does it when post-quantum keys are turned
// off: a later exchange starts afresh).
func (p *Pair) Forget() {
	p.Abort()
	p.cur, p.prev = nil, nil
}

// Abort gives up the exchange in progress; the installed keys stay.
func (p *Pair) Abort() {
	p.epoch, p.dk, p.ss, p.pending, p.sent = 0, nil, nil, nil, nil
}

// Resend returns the last message this side sent in the exchange in
// progress (nil when none), for a retransmission.
func (p *Pair) Resend() *peerv1.PostQuantum { return p.sent }

// maxRequestEpoch bounds the epochs a request may lift this side to: far
// above any clock in milliseconds, and far enough below the largest epoch
// that a lifted initiator never runs out of new ones.
const maxRequestEpoch = 1 << 62

// Request asks the initiator for an exchange (responder only). It names
// the last epoch this side accepted, so that an initiator whose clock went
// back since (epochs follow its clock) starts above it.
func (p *Pair) Request(reason string) *peerv1.PostQuantum {
	return &peerv1.PostQuantum{Step: peerv1.Step_STEP_REQUEST, Epoch: p.last, From: p.self[:], To: p.remote[:], Reason: reason}
}

// Start begins an exchange of the given epoch, which must be larger than
// every earlier one; it replaces an exchange in progress. Initiator only.
func (p *Pair) Start(epoch uint64) (*peerv1.PostQuantum, error) {
	if !p.initiator {
		return nil, errors.New("pqpsk: only the initiator starts an exchange")
	}
	if epoch <= p.last {
		return nil, fmt.Errorf("%w: epoch %d, last %d", ErrOldEpoch, epoch, p.last)
	}
	dk, err := p.generate()
	if err != nil {
		return nil, fmt.Errorf("pqpsk: generate key: %w", err)
	}
	p.Abort()
	p.last, p.epoch, p.dk = epoch, epoch, dk
	p.sent = p.msg(peerv1.Step_STEP_INIT, epoch)
	p.sent.EncapsulationKey = dk.EncapsulationKey().Bytes()
	return p.sent, nil
}

func (p *Pair) msg(step peerv1.Step, epoch uint64) *peerv1.PostQuantum {
	return &peerv1.PostQuantum{Step: step, Epoch: epoch, From: p.self[:], To: p.remote[:]}
}

// Handle takes one message from the remote. On error nothing changed but,
// for a failed key confirmation, the exchange in progress was given up.
func (p *Pair) Handle(m *peerv1.PostQuantum) (Out, error) {
	if !bytes.Equal(m.GetFrom(), p.remote[:]) || !bytes.Equal(m.GetTo(), p.self[:]) {
		return Out{}, ErrWrongPeer
	}
	step := m.GetStep()
	if step == peerv1.Step_STEP_REQUEST {
		if !p.initiator {
			return Out{}, fmt.Errorf("%w: a request to the responder", ErrUnexpected)
		}
		if e := m.GetEpoch(); e > p.last && e < maxRequestEpoch {
			// The responder accepted epochs beyond ours (this side
			// restarted with its clock behind): an exchange in flight
			// was refused there, and the next must start above.
			p.last = e
			p.Abort()
		}
		return Out{Requested: true}, nil
	}
	if m.GetEpoch() == 0 {
		return Out{}, fmt.Errorf("%w: epoch 0", ErrMalformed)
	}
	switch {
	case p.initiator && step == peerv1.Step_STEP_REPLY:
		return p.reply(m)
	case p.initiator && step == peerv1.Step_STEP_DONE:
		return p.done(m)
	case !p.initiator && step == peerv1.Step_STEP_INIT:
		return p.init(m)
	case !p.initiator && step == peerv1.Step_STEP_FINISH:
		return p.finish(m)
	}
	return Out{}, fmt.Errorf("%w: step %s", ErrUnexpected, step)
}

// repeat answers a retransmission of the message answered last.
func (p *Pair) repeat(m *peerv1.PostQuantum) (Out, bool) {
	if p.lastIn != nil && p.lastIn.GetStep() == m.GetStep() && p.lastIn.GetEpoch() == m.GetEpoch() &&
		bytes.Equal(p.lastIn.GetEncapsulationKey(), m.GetEncapsulationKey()) &&
		bytes.Equal(p.lastIn.GetCiphertext(), m.GetCiphertext()) && bytes.Equal(p.lastIn.GetConfirm(), m.GetConfirm()) {
		return Out{Send: p.lastOut}, true
	}
	return Out{}, false
}

// stale says why a message of another epoch than the exchange in progress
// is refused.
func (p *Pair) stale(m *peerv1.PostQuantum) error {
	if m.GetEpoch() <= p.last {
		return fmt.Errorf("%w: %s of epoch %d, at %d", ErrOldEpoch, m.GetStep(), m.GetEpoch(), p.last)
	}
	return fmt.Errorf("%w: %s of epoch %d, no exchange of it in progress", ErrUnexpected, m.GetStep(), m.GetEpoch())
}

// init (responder): encapsulate to the initiator's key, send ours.
func (p *Pair) init(m *peerv1.PostQuantum) (Out, error) {
	if out, ok := p.repeat(m); ok {
		return out, nil
	}
	if m.GetEpoch() <= p.last {
		return Out{}, p.stale(m)
	}
	ekI, err := mlkem.NewEncapsulationKey768(m.GetEncapsulationKey())
	if err != nil {
		return Out{}, fmt.Errorf("%w: encapsulation key: %v", ErrMalformed, err)
	}
	dk, err := p.generate()
	if err != nil {
		return Out{}, fmt.Errorf("pqpsk: generate key: %w", err)
	}
	ss, ct := p.encaps(ekI)
	p.Abort()
	p.last, p.epoch, p.dk, p.ss = m.GetEpoch(), m.GetEpoch(), dk, ss
	out := p.msg(peerv1.Step_STEP_REPLY, m.GetEpoch())
	out.EncapsulationKey, out.Ciphertext = dk.EncapsulationKey().Bytes(), ct
	p.sent, p.lastIn, p.lastOut = out, m, out
	return Out{Send: out}, nil
}

// reply (initiator): decapsulate, encapsulate to the responder's key,
// derive, prove it.
func (p *Pair) reply(m *peerv1.PostQuantum) (Out, error) {
	if m.GetEpoch() != p.epoch || p.dk == nil {
		if m.GetEpoch() == p.epoch && p.pending != nil {
			return Out{Send: p.sent}, nil // our FINISH was lost: the same again
		}
		return Out{}, p.stale(m)
	}
	ssR, err := p.dk.Decapsulate(m.GetCiphertext())
	if err != nil {
		return Out{}, fmt.Errorf("%w: ciphertext: %v", ErrMalformed, err)
	}
	ekR, err := mlkem.NewEncapsulationKey768(m.GetEncapsulationKey())
	if err != nil {
		return Out{}, fmt.Errorf("%w: encapsulation key: %v", ErrMalformed, err)
	}
	ssI, ct := p.encaps(ekR)
	s := Derive(p.self, p.remote, ssI, ssR, p.epoch)
	p.dk, p.pending = nil, &s
	out := p.msg(peerv1.Step_STEP_FINISH, p.epoch)
	out.Ciphertext, out.Confirm = ct, s.Tag(roleInitiator, p.epoch)
	p.sent = out
	return Out{Send: out}, nil
}

// finish (responder): decapsulate, derive, check the initiator's proof,
// install and confirm.
func (p *Pair) finish(m *peerv1.PostQuantum) (Out, error) {
	if out, ok := p.repeat(m); ok {
		return out, nil
	}
	if m.GetEpoch() != p.epoch || p.dk == nil {
		return Out{}, p.stale(m)
	}
	ssI, err := p.dk.Decapsulate(m.GetCiphertext())
	if err != nil {
		return Out{}, fmt.Errorf("%w: ciphertext: %v", ErrMalformed, err)
	}
	s := Derive(p.self, p.remote, p.ss, ssI, p.epoch)
	if !s.checkTag(roleInitiator, p.epoch, m.GetConfirm()) {
		p.Abort()
		return Out{}, fmt.Errorf("%w: epoch %d", ErrTampered, m.GetEpoch())
	}
	k := p.install(s)
	out := p.msg(peerv1.Step_STEP_DONE, m.GetEpoch())
	out.Confirm = s.Tag(roleResponder, m.GetEpoch())
	p.Abort()
	p.lastIn, p.lastOut = m, out
	return Out{Send: out, Ready: k}, nil
}

// done (initiator): check the responder's proof and install.
func (p *Pair) done(m *peerv1.PostQuantum) (Out, error) {
	if m.GetEpoch() != p.epoch || p.pending == nil {
		return Out{}, p.stale(m)
	}
	s := *p.pending
	if !s.checkTag(roleResponder, p.epoch, m.GetConfirm()) {
		p.Abort()
		return Out{}, fmt.Errorf("%w: epoch %d", ErrTampered, m.GetEpoch())
	}
	k := p.install(s)
	p.Abort()
	return Out{Ready: k}, nil
}

func (p *Pair) install(s Secrets) *Key {
	k := &Key{Epoch: p.epoch, PSK: s.PSK}
	p.prev, p.cur = p.cur, k
	return k
}
