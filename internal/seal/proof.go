package seal

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"time"

	"meshd/internal/keys"
)

// Purposes of proofs; a proof made for one purpose is refused for another.
const (
	PurposeLogin  = "meshd/login"
	PurposeSync   = "meshd/sync"
	PurposeSignal = "meshd/signal"
	PurposePaths  = "meshd/paths"
)

var (
	// ErrProof means a proof did not show possession of the claimed key.
	ErrProof = errors.New("seal: key proof failed")
	// ErrChallenge means a challenge is unknown, expired or already used.
	ErrChallenge = errors.New("seal: challenge invalid, expired or already used")
)

// Prove seals purpose||challenge from priv to the server key, showing that
// the caller holds priv. A weak server key is refused (keys.ErrWeakKey).
func Prove(purpose string, challenge []byte, server keys.Key, priv keys.Private) (nonce [NonceLen]byte, sealed []byte, err error) {
	b, err := NewBox(priv, server)
	if err != nil {
		return nonce, nil, err
	}
	msg := append([]byte(purpose), challenge...)
	sealed, nonce = b.Seal(nil, msg)
	return nonce, sealed, nil
}

// VerifyProof checks a proof made by Prove by the holder of peer's private
// key. A weak peer key fails with keys.ErrWeakKey (and ErrProof): with one,
// anyone could have made the proof.
func VerifyProof(purpose string, challenge, nonce, sealed []byte, peer keys.Key, server keys.Private) error {
	b, err := NewBox(server, peer)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrProof, err)
	}
	msg, err := b.Open(nil, sealed, nonce)
	if err != nil {
		return ErrProof
	}
	want := append([]byte(purpose), challenge...)
	if !bytes.Equal(msg, want) {
		return ErrProof
	}
	return nil
}

// Challenger issues single-use challenges that expire, without storing the
// ones it issued: a challenge carries its issue time and an HMAC. Only used
// challenges are remembered, until they expire.
type Challenger struct {
	secret [32]byte
	ttl    time.Duration

	mu   sync.Mutex
	used map[[challengeLen]byte]time.Time // challenge → expiry
	next time.Time                        // next sweep of used
}

const challengeLen = 8 + 16 + 16 // issued-at, random, mac

// NewChallenger returns a Challenger whose challenges live for ttl.
func NewChallenger(ttl time.Duration) *Challenger {
	c := &Challenger{ttl: ttl, used: make(map[[challengeLen]byte]time.Time)}
	if _, err := rand.Read(c.secret[:]); err != nil {
		panic("seal: crypto/rand failed: " + err.Error())
	}
	return c
}

// Issue returns a fresh challenge and when it expires.
func (c *Challenger) Issue(now time.Time) ([]byte, time.Time) {
	ch := make([]byte, challengeLen)
	binary.BigEndian.PutUint64(ch, uint64(now.UnixNano()))
	if _, err := rand.Read(ch[8:24]); err != nil {
		panic("seal: crypto/rand failed: " + err.Error())
	}
	copy(ch[24:], c.mac(ch[:24]))
	return ch, now.Add(c.ttl)
}

func (c *Challenger) mac(b []byte) []byte {
	m := hmac.New(sha256.New, c.secret[:])
	m.Write(b)
	return m.Sum(nil)[:16]
}

// Use accepts a challenge this Challenger issued that has not expired and was
// not used before, and marks it used.
func (c *Challenger) Use(ch []byte, now time.Time) error {
	if len(ch) != challengeLen || !hmac.Equal(ch[24:], c.mac(ch[:24])) {
		return ErrChallenge
	}
	issued := time.Unix(0, int64(binary.BigEndian.Uint64(ch)))
	expires := issued.Add(c.ttl)
	if now.After(expires) || issued.After(now.Add(time.Second)) {
		return fmt.Errorf("%w (issued %s ago)", ErrChallenge, now.Sub(issued).Round(time.Millisecond))
	}
	var k [challengeLen]byte
	copy(k[:], ch)
	c.mu.Lock()
	defer c.mu.Unlock()
	if now.After(c.next) {
		for u, exp := range c.used {
			if now.After(exp) {
				delete(c.used, u)
			}
		}
		c.next = now.Add(c.ttl)
	}
	if _, seen := c.used[k]; seen {
		return ErrChallenge
	}
	c.used[k] = expires
	return nil
}
