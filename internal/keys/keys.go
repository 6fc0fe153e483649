// Package keys handles WireGuard key pairs: Curve25519 keys in the base64
// form wg(8) prints, and the private key file an agent keeps in its state
// directory. Anyone may import it.
package keys

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"

	"golang.org/x/crypto/curve25519"
)

// Len is the length of a key in bytes.
const Len = 32

// Key is a Curve25519 key, private or public.
type Key [Len]byte

// Private is a WireGuard private key.
type Private struct{ k Key }

// ErrBadKey is returned for a key of the wrong length or encoding.
var ErrBadKey = errors.New("keys: not a 32-byte key")

// Generate returns a new random private key, clamped as Curve25519 requires.
func Generate() (Private, error) {
	var p Private
	if _, err := rand.Read(p.k[:]); err != nil {
		return Private{}, fmt.Errorf("keys: generate: %w", err)
	}
	clamp(&p.k)
	return p, nil
}

func clamp(k *Key) {
	k[0] &= 248
	k[31] = (k[31] & 127) | 64
}

// Public returns the public key of p.
func (p Private) Public() Key {
	var pub Key
	curve25519.ScalarBaseMult((*[32]byte)(&pub), (*[32]byte)(&p.k))
	return pub
}

// Bytes returns the raw private key. Keep it secret.
func (p Private) Bytes() *[Len]byte { k := p.k; return (*[Len]byte)(&k) }

// IsZero reports whether p was never set.
func (p Private) IsZero() bool { return p.k == Key{} }

// String returns the private key in base64. It exists for writing the key
// file and for wireguard configuration; never log it.
func (p Private) String() string { return p.k.String() }

// Hex returns the private key in hex, as the WireGuard UAPI wants it.
func (p Private) Hex() string { return hex.EncodeToString(p.k[:]) }

// ParsePrivate parses a base64 private key.
func ParsePrivate(s string) (Private, error) {
	k, err := Parse(s)
	if err != nil {
		return Private{}, err
	}
	clamp(&k)
	return Private{k: k}, nil
}

// String returns k in base64, as wg(8) prints it.
func (k Key) String() string { return base64.StdEncoding.EncodeToString(k[:]) }

// Hex returns k in hex, as the WireGuard UAPI wants it.
func (k Key) Hex() string { return hex.EncodeToString(k[:]) }

// IsZero reports whether k is all zeroes.
func (k Key) IsZero() bool { return k == Key{} }

// Bytes returns a pointer to the raw key, the form NaCl box takes.
func (k Key) Bytes() *[Len]byte { return (*[Len]byte)(&k) }

// Parse parses a base64 key.
func Parse(s string) (Key, error) {
	var k Key
	b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(s))
	if err != nil || len(b) != Len {
		return k, fmt.Errorf("%w: %q", ErrBadKey, abbrev(s))
	}
	copy(k[:], b)
	return k, nil
}

// FromBytes copies a 32-byte slice into a Key.
func FromBytes(b []byte) (Key, error) {
	var k Key
	if len(b) != Len {
		return k, fmt.Errorf("%w: got %d bytes", ErrBadKey, len(b))
	}
	copy(k[:], b)
	return k, nil
}

func abbrev(s string) string {
	if len(s) > 12 {
		return s[:12] + "…"
	}
	return s
}

// LoadOrCreate reads the private key stored at path, or creates one there
// (mode 0600) when the file does not exist. A file that exists but does not
// hold a key is an error, never silently replaced: it is the peer's identity.
func LoadOrCreate(path string) (priv Private, created bool, err error) {
	b, err := os.ReadFile(path)
	if err == nil {
		priv, err = ParsePrivate(string(b))
		if err != nil {
			return Private{}, false, fmt.Errorf("keys: %s does not hold a private key (%v); move it away to create a new identity", path, err)
		}
		return priv, false, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return Private{}, false, fmt.Errorf("keys: read %s: %w", path, err)
	}
	priv, err = Generate()
	if err != nil {
		return Private{}, false, err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return Private{}, false, fmt.Errorf("keys: create %s: %w", path, err)
	}
	if _, err := f.WriteString(priv.String() + "\n"); err != nil {
		f.Close()
		os.Remove(path)
		return Private{}, false, fmt.Errorf("keys: write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		os.Remove(path)
		return Private{}, false, fmt.Errorf("keys: write %s: %w", path, err)
	}
	return priv, true, nil
}
