// Package seal is meshd's end-to-end cryptography over WireGuard keys: NaCl
// box between two Curve25519 keys for messages that servers forward but must
// not read (signal envelopes), proofs that a caller holds the private key of
// the public key it claims (control login and sync, signal registration),
// and the replay guard that recipients of sealed messages keep. Only
// internal/control, internal/controlclient, internal/signal and
// internal/signalclient import it.
package seal

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"golang.org/x/crypto/curve25519"
	"golang.org/x/crypto/nacl/box"
	"golang.org/x/crypto/salsa20/salsa"

	"meshd/internal/keys"
)

// NonceLen is the length of a box nonce.
const NonceLen = 24

// Overhead is what sealing adds to a payload (box overhead plus the timestamp
// of a Message).
const Overhead = box.Overhead + 8

var (
	// ErrOpen means a sealed message was tampered with, or sealed for someone
	// else, or by someone other than the claimed sender.
	ErrOpen = errors.New("seal: message does not open (tampered, or wrong keys)")
	// ErrReplay means a message was seen before.
	ErrReplay = errors.New("seal: replayed message")
	// ErrStale means a message's timestamp is outside the accepted window.
	ErrStale = errors.New("seal: message too old or from the future")
)

// Nonce returns 24 random bytes.
func Nonce() [NonceLen]byte {
	var n [NonceLen]byte
	if _, err := rand.Read(n[:]); err != nil {
		panic("seal: crypto/rand failed: " + err.Error())
	}
	return n
}

// Box seals and opens messages between one local private key and one remote
// public key. It precomputes the shared key, so keep one per remote peer.
type Box struct {
	shared [32]byte
}

// NewBox precomputes the shared key between priv and remote. It refuses a
// weak remote key (keys.ErrWeakKey): box.Precompute would accept one, and
// the shared key would then be one that anyone can compute. It derives the
// key as box.Precompute does (X25519, then HSalsa20), through the X25519
// that refuses an all-zero shared secret.
func NewBox(priv keys.Private, remote keys.Key) (*Box, error) {
	if err := remote.CheckPublic(); err != nil {
		return nil, fmt.Errorf("seal: %w", err)
	}
	dh, err := curve25519.X25519(priv.Bytes()[:], remote[:])
	if err != nil {
		return nil, fmt.Errorf("seal: %w: %v", keys.ErrWeakKey, err)
	}
	b := &Box{}
	var zeros [16]byte
	salsa.HSalsa20(&b.shared, &zeros, (*[32]byte)(dh), &salsa.Sigma)
	return b, nil
}

// Seal appends the sealed payload to out and returns it with the fresh nonce.
func (b *Box) Seal(out, payload []byte) ([]byte, [NonceLen]byte) {
	n := Nonce()
	return box.SealAfterPrecomputation(out, payload, &n, &b.shared), n
}

// Open opens a sealed payload.
func (b *Box) Open(out, sealed []byte, nonce []byte) ([]byte, error) {
	if len(nonce) != NonceLen {
		return nil, fmt.Errorf("%w: nonce is %d bytes", ErrOpen, len(nonce))
	}
	p, ok := box.OpenAfterPrecomputation(out, sealed, (*[NonceLen]byte)(nonce), &b.shared)
	if !ok {
		return nil, ErrOpen
	}
	return p, nil
}

// SealMessage seals payload with the time it was sealed, for a recipient that
// keeps a ReplayGuard.
func (b *Box) SealMessage(payload []byte, now time.Time) (sealed []byte, nonce [NonceLen]byte) {
	msg := make([]byte, 8, 8+len(payload))
	binary.BigEndian.PutUint64(msg, uint64(now.UnixNano()))
	msg = append(msg, payload...)
	return b.Seal(nil, msg)
}

// OpenMessage opens a message made by SealMessage and checks it against the
// guard: a replayed or stale message is refused.
func (b *Box) OpenMessage(sealed, nonce []byte, g *ReplayGuard, now time.Time) ([]byte, error) {
	msg, err := b.Open(nil, sealed, nonce)
	if err != nil {
		return nil, err
	}
	if len(msg) < 8 {
		return nil, fmt.Errorf("%w: no timestamp", ErrOpen)
	}
	at := time.Unix(0, int64(binary.BigEndian.Uint64(msg)))
	if err := g.Check((*[NonceLen]byte)(nonce), at, now); err != nil {
		return nil, err
	}
	return msg[8:], nil
}
