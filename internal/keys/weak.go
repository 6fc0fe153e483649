package keys

import (
	"errors"
	"fmt"
)

// ErrWeakKey is returned for a public key that no honest peer has: one of
// the points of small order on Curve25519, or an encoding of a point that is
// not canonical. A Diffie-Hellman with such a key gives a shared secret that
// anyone can compute without the private key, so a proof of key "made" with
// it proves nothing.
var ErrWeakKey = errors.New("keys: low-order or non-canonical Curve25519 public key")

// smallOrder holds the canonical encodings (little-endian u-coordinates
// below p = 2^255-19) of the points of order 1, 2, 4 and 8 that are not
// already refused by checkCanonical: 0, 1, the two points of order 8, and
// p-1. Their other encodings (p, p+1, and u+p or u+2^255 for the rest) are
// at or above p, or have the top bit set.
var smallOrder = [...]Key{
	{},
	{1},
	{0xe0, 0xeb, 0x7a, 0x7c, 0x3b, 0x41, 0xb8, 0xae, 0x16, 0x56, 0xe3, 0xfa, 0xf1, 0x9f, 0xc4, 0x6a,
		0xda, 0x09, 0x8d, 0xeb, 0x9c, 0x32, 0xb1, 0xfd, 0x86, 0x62, 0x05, 0x16, 0x5f, 0x49, 0xb8, 0x00},
	{0x5f, 0x9c, 0x95, 0xbc, 0xa3, 0x50, 0x8c, 0x24, 0xb1, 0xd0, 0xb1, 0x55, 0x9c, 0x83, 0xef, 0x5b,
		0x04, 0x44, 0x5c, 0xc4, 0x58, 0x1c, 0x8e, 0x86, 0xd8, 0x22, 0x4e, 0xdd, 0xd0, 0x9f, 0x11, 0x57},
	{0xec, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
		0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f},
}

// CheckPublic refuses a public key that is not the canonical encoding of a
// point of large order. Every key that enters meshd from outside (a login,
// a registration at signal, an envelope's recipient, a peer in a map) goes
// through it: keys made by Generate always pass.
func (k Key) CheckPublic() error {
	if k[31]&0x80 != 0 {
		return fmt.Errorf("%w: the top bit is set (%s)", ErrWeakKey, k)
	}
	if !belowP(k) {
		return fmt.Errorf("%w: not reduced modulo 2^255-19 (%s)", ErrWeakKey, k)
	}
	for _, w := range smallOrder {
		if k == w {
			return fmt.Errorf("%w: a point of small order (%s)", ErrWeakKey, k)
		}
	}
	return nil
}

// belowP reports whether k, read as a little-endian integer below 2^255,
// is below p = 2^255-19: p is 0x7fff...ffed, so every value from p to
// 2^255-1 has bytes 1..30 all 0xff, byte 31 0x7f and byte 0 at least 0xed.
func belowP(k Key) bool {
	if k[31] != 0x7f || k[0] < 0xed {
		return true
	}
	for _, b := range k[1:31] {
		if b != 0xff {
			return true
		}
	}
	return false
}

// ParsePublic parses a base64 public key and refuses a weak one.
func ParsePublic(s string) (Key, error) {
	k, err := Parse(s)
	if err != nil {
		return k, err
	}
	if err := k.CheckPublic(); err != nil {
		return Key{}, err
	}
	return k, nil
}

// PublicFromBytes copies a 32-byte public key and refuses a weak one.
func PublicFromBytes(b []byte) (Key, error) {
	k, err := FromBytes(b)
	if err != nil {
		return k, err
	}
	if err := k.CheckPublic(); err != nil {
		return Key{}, err
	}
	return k, nil
}
