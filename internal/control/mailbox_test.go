package control

import (
	"maps"
	"slices"
	"testing"
)

func newTestConn(updates bool) *conn {
	return &conn{peerID: "self", updates: updates, wake: make(chan struct{}, 1), kick: make(chan error, 1)}
}

func boxEntries(b mailbox) []string { return slices.Sorted(maps.Keys(b.entries)) }

// Rounds posted while a stream does not look merge: entries add up and
// carry the newest round's index, a whole map absorbs entries before and
// after it, and one wake-up stays pending.
func TestMailboxMerges(t *testing.T) {
	s1, s2, s3 := &snapshot{gen: 1}, &snapshot{gen: 2}, &snapshot{gen: 3}
	c := newTestConn(true)
	c.post(s1, false, []string{"x"}, 10)
	c.post(s2, false, []string{"y", "x"}, 20)
	if len(c.wake) != 1 {
		t.Fatalf("%d wake-ups pending, want 1", len(c.wake))
	}
	b := c.take()
	if b.full || b.snap != s2 || !slices.Equal(boxEntries(b), []string{"x", "y"}) || b.serial != 20 {
		t.Fatalf("box = %+v, want entries x y of round 2, its serial", b)
	}
	if b := c.take(); b.snap != nil || b.full || len(b.entries) != 0 {
		t.Fatalf("taken box not empty: %+v", b)
	}

	c.post(s1, false, []string{"x"}, 1)
	c.post(s2, true, nil, 2)
	c.post(s3, false, []string{"y"}, 3)
	if b := c.take(); !b.full || b.snap != s3 || len(b.entries) != 0 {
		t.Fatalf("box = %+v, want the whole map as of round 3", b)
	}

	// An agent that does not take updates gets whole maps only.
	old := newTestConn(false)
	old.post(s1, false, []string{"x"}, 1)
	if b := old.take(); !b.full {
		t.Fatalf("box of an agent without updates = %+v", b)
	}

	// Too many entries: the whole map.
	many := make([]string, maxUpdateEntries)
	for i := range many {
		many[i] = string(rune('a'+i%26)) + string(rune('a'+i/26))
	}
	c.post(s1, false, many[:maxUpdateEntries/2], 1)
	c.post(s2, false, many[maxUpdateEntries/2:], 2)
	if b := c.take(); b.full {
		t.Fatalf("%d entries made a whole map", maxUpdateEntries)
	}
	c.post(s1, false, many, 1)
	c.post(s2, false, []string{"one more"}, 1)
	if b := c.take(); !b.full || len(b.entries) != 0 {
		t.Fatalf("%d entries: box %v entries, want the whole map", maxUpdateEntries+1, len(b.entries))
	}
}
