package signal

import (
	"testing"

	"meshd/internal/keys"
)

// TestRefusalsEvictByPlace: a key forgotten and refused again keeps its
// new place; its old place in the order evicts nothing.
func TestRefusalsEvictByPlace(t *testing.T) {
	var r refusals
	k := keys.Key{1}
	r.add(k, "acct", "ticket expired")
	r.forget(k)
	r.add(k, "acct", "ticket expired again")
	for i := 0; i < maxRefusals-2; i++ { // fills up to the limit, then evicts k's old place
		r.add(keys.Key{2, byte(i), byte(i >> 8)}, "acct", "x")
	}
	r.add(keys.Key{3}, "acct", "x")
	if got := r.why(k, "acct"); got != "ticket expired again" {
		t.Fatalf("why = %q after its stale place was evicted; want the newer refusal", got)
	}
	if got := r.why(k, "other"); got != "" {
		t.Fatalf("another account learns %q", got)
	}
}
