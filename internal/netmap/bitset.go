package netmap

import "math/bits"

// bitset is a set of small non-negative integers.
type bitset []uint64

func newBitset(n int) bitset { return make(bitset, (n+63)/64) }

func (b bitset) set(i int32)      { b[i>>6] |= 1 << (uint(i) & 63) }
func (b bitset) has(i int32) bool { return b[i>>6]&(1<<(uint(i)&63)) != 0 }

// intersects reports whether any of ids is in b.
func (b bitset) intersects(ids []int32) bool {
	for _, i := range ids {
		if b.has(i) {
			return true
		}
	}
	return false
}

// count returns the number of members.
func (b bitset) count() int {
	n := 0
	for _, w := range b {
		n += bits.OnesCount64(w)
	}
	return n
}

// drain calls fn for every member in ascending order and empties b. It costs
// one word read per 64 possible members plus one call per member.
func (b bitset) drain(fn func(i int32)) {
	for w, word := range b {
		if word == 0 {
			continue
		}
		b[w] = 0
		for word != 0 {
			t := bits.TrailingZeros64(word)
			fn(int32(w<<6 + t))
			word &= word - 1
		}
	}
}
