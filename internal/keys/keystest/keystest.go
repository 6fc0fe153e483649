// Package keystest gives tests the keys an attacker would use: every
// encoding of the points of small order on Curve25519, computed here from
// their u-coordinates rather than copied from the table internal/keys
// refuses them with, so the two check each other. Tests of every package
// where a key enters meshd import it.
package keystest

import (
	"math/big"

	"meshd/internal/keys"
)

// The u-coordinates of the two points of order 8 (the others of small order
// are 0, 1 and p-1).
const (
	order8a = "325606250916557431795983626356110631294008115727848805560023387167927233504"
	order8b = "39382357235489614581723060781553021112529911719440698176882885853963445705823"
)

// Weak returns every 32-byte encoding of a point of small order: each of
// the 5 canonical u-coordinates (0, 1, p-1 and the two of order 8), u+p
// where that is below 2^255 (p and p+1), and each of those 7 with the top
// bit set (X25519 ignores it) — 14 keys.
func Weak() []keys.Key {
	p := new(big.Int).Sub(new(big.Int).Lsh(big.NewInt(1), 255), big.NewInt(19))
	a, _ := new(big.Int).SetString(order8a, 10)
	b, _ := new(big.Int).SetString(order8b, 10)
	us := []*big.Int{big.NewInt(0), big.NewInt(1), a, b, new(big.Int).Sub(p, big.NewInt(1))}
	limit := new(big.Int).Lsh(big.NewInt(1), 255)
	var out []keys.Key
	add := func(v *big.Int) {
		if v.Cmp(limit) >= 0 {
			return
		}
		var k keys.Key
		v.FillBytes(k[:])
		for i, j := 0, len(k)-1; i < j; i, j = i+1, j-1 { // to little-endian
			k[i], k[j] = k[j], k[i]
		}
		out = append(out, k)
		k[31] |= 0x80
		out = append(out, k)
	}
	for _, u := range us {
		add(u)
		add(new(big.Int).Add(u, p))
	}
	return out
}
