package signal

import (
	"testing"
	"time"

	"meshd/internal/keys"
)

func TestLimitersRefillAndForgetOnlyWhatIsFull(t *testing.T) {
	l := newLimiters(10, 5) // 10 a second, burst 5
	now := time.Unix(1_700_000_000, 0)
	var a, b keys.Key
	a[0], b[0] = 1, 2

	ba := l.acquire(a, now)
	for i := range 5 {
		if ok, _ := l.take(ba, now); !ok {
			t.Fatalf("take %d within burst refused", i)
		}
	}
	ok, wait := l.take(ba, now)
	if ok || wait != 100*time.Millisecond {
		t.Fatalf("take beyond burst: %v, wait %s; want refused, 100ms", ok, wait)
	}
	if ok, _ := l.take(ba, now.Add(100*time.Millisecond)); !ok {
		t.Fatal("refused after a token's worth of time")
	}
	l.release(a)

	// Sweeps run at most once a minute, on acquire. One at 2m+50ms forgets
	// b, whose bucket is full and unused, but keeps a, drained at 2m and
	// still refilling, so that reconnecting does not refill it.
	l.acquire(b, now)
	l.release(b)
	t2 := now.Add(2 * time.Minute)
	for range 5 {
		l.take(ba, t2)
	}
	l.acquire(keys.Key{3}, t2.Add(50*time.Millisecond))
	l.mu.Lock()
	_, hasA := l.buckets[a]
	_, hasB := l.buckets[b]
	l.mu.Unlock()
	if hasB || !hasA {
		t.Fatalf("after the sweep: a kept %v (want true), b kept %v (want false)", hasA, hasB)
	}
	if got := l.acquire(a, t2.Add(50*time.Millisecond)); got != ba {
		t.Fatal("reconnecting got a new bucket")
	}
}
