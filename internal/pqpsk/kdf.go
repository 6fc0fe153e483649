// Package pqpsk is the post-quantum pre-shared key exchange between two
// agents: each side encapsulates to a fresh ML-KEM-768 key of the other
// (crypto/mlkem), and the WireGuard pre-shared key of an epoch is derived
// from both shared secrets and both WireGuard public keys, so neither side
// alone chooses it. WireGuard mixes the PSK into its Noise handshake: a
// session recorded today stays secret even once X25519 falls, as long as
// ML-KEM holds.
//
// The package is pure and clock-free: Pair is a state machine fed messages
// (peer.v1 PostQuantum, carried in the sealed signal envelopes) that says
// what to send back and when a key is ready; the agent (internal/agent)
// decides when to rotate, retransmit, install and fall back. The
// construction is documented in docs/post-quantum.md. Only internal/agent
// imports it.
package pqpsk

import (
	"bytes"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"

	"meshd/internal/keys"
)

// Label is the domain separation label of the construction; a change of
// construction changes it.
const Label = "meshd pq psk v1"

// KeySize is the size of a pre-shared key (WireGuard's).
const KeySize = 32

// PSK is a WireGuard pre-shared key.
type PSK [KeySize]byte

// Secrets are what the KDF derives for one epoch: the pre-shared key, and a
// key that only the confirmation tags use (so a tag reveals nothing about
// the PSK).
type Secrets struct {
	PSK     PSK
	confirm [32]byte
}

// Derive computes the secrets of an epoch between WireGuard public keys a
// and b. ssA is the shared secret of the encapsulation a made (to b's
// ML-KEM key), ssB the one b made. The result does not depend on which
// side calls it: the inputs are put in the order of the public keys.
//
//	lo, hi   = a, b ordered as bytes (ss_lo, ss_hi likewise)
//	salt     = Label || lo || hi || epoch (8 bytes, big endian)
//	prk      = HKDF-Extract(SHA-256, salt, ss_lo || ss_hi)
//	psk      = HKDF-Expand(prk, "psk", 32)
//	confirm  = HKDF-Expand(prk, "confirm", 32)
func Derive(a, b keys.Key, ssA, ssB []byte, epoch uint64) Secrets {
	if bytes.Compare(a[:], b[:]) > 0 {
		a, b = b, a
		ssA, ssB = ssB, ssA
	}
	salt := make([]byte, 0, len(Label)+2*keys.Len+8)
	salt = append(salt, Label...)
	salt = append(salt, a[:]...)
	salt = append(salt, b[:]...)
	salt = binary.BigEndian.AppendUint64(salt, epoch)
	ikm := make([]byte, 0, len(ssA)+len(ssB))
	ikm = append(ikm, ssA...)
	ikm = append(ikm, ssB...)
	prk, err := hkdf.Extract(sha256.New, ikm, salt)
	if err != nil {
		panic("pqpsk: hkdf extract: " + err.Error()) // only for FIPS-only modes with short keys
	}
	var s Secrets
	psk, err := hkdf.Expand(sha256.New, prk, "psk", KeySize)
	if err != nil {
		panic("pqpsk: hkdf expand: " + err.Error())
	}
	conf, err := hkdf.Expand(sha256.New, prk, "confirm", 32)
	if err != nil {
		panic("pqpsk: hkdf expand: " + err.Error())
	}
	copy(s.PSK[:], psk)
	copy(s.confirm[:], conf)
	return s
}

// Tag is the key confirmation a side sends: HMAC-SHA256 under the confirm
// key of the role ("initiator" or "responder") and the epoch. ML-KEM
// rejects a bad ciphertext implicitly (decapsulation yields an unrelated
// secret, no error), so without it a damaged message would leave the two
// sides with different keys and nobody would know.
func (s Secrets) Tag(role string, epoch uint64) []byte {
	m := hmac.New(sha256.New, s.confirm[:])
	m.Write([]byte(role))
	m.Write(binary.BigEndian.AppendUint64(nil, epoch))
	return m.Sum(nil)
}

// checkTag compares a received tag in constant time.
func (s Secrets) checkTag(role string, epoch uint64, tag []byte) bool {
	return hmac.Equal(s.Tag(role, epoch), tag)
}
