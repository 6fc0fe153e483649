package signalclient

import (
	"errors"
	"testing"
	"time"

	"meshd/internal/keys"
	"meshd/internal/keys/keystest"
)

// A full table makes room by dropping the entry unused the longest; a new
// sender is never refused, and a weak key never gets an entry.
func TestPeersTableEvictsLeastRecentlyUsed(t *testing.T) {
	me, _ := keys.Generate()
	p := newPeers(me, time.Minute, 3)
	var ks []keys.Key
	for range 4 {
		k, _ := keys.Generate()
		ks = append(ks, k.Public())
	}
	for _, k := range ks[:3] {
		if _, err := p.get(k); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := p.get(ks[0]); err != nil { // ks[1] is now the least recently used
		t.Fatal(err)
	}
	if _, err := p.get(ks[3]); err != nil {
		t.Fatalf("a new sender refused on a full table: %v", err)
	}
	if p.len() != 3 {
		t.Fatalf("table holds %d, want 3", p.len())
	}
	p.mu.Lock()
	_, has1 := p.m[ks[1]]
	_, has0 := p.m[ks[0]]
	p.mu.Unlock()
	if has1 || !has0 {
		t.Fatalf("evicted the wrong entry: has ks[0] %t, ks[1] %t", has0, has1)
	}
	for _, weak := range keystest.Weak() {
		if _, err := p.get(weak); !errors.Is(err, keys.ErrWeakKey) {
			t.Fatalf("weak key %x: %v, want ErrWeakKey", weak, err)
		}
	}
	if p.len() != 3 {
		t.Fatalf("table holds %d after weak keys, want 3", p.len())
	}
}
