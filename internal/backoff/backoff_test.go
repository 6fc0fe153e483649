package backoff

import (
	"testing"
	"time"
)

func full(n time.Duration) time.Duration { return n } // the largest wait of each step

// waits returns the next n waits, the clock moving by each wait (as a
// reconnect loop whose every attempt fails at once).
func waits(b *Backoff, now *time.Time, n int) []time.Duration {
	var out []time.Duration
	for range n {
		w := b.Next(*now)
		*now = now.Add(w)
		out = append(out, w)
	}
	return out
}

func TestStepsDoubleToMax(t *testing.T) {
	b := &Backoff{Min: 250 * time.Millisecond, Max: 30 * time.Second, Jitter: full}
	now := time.Unix(1_700_000_000, 0)
	got := waits(b, &now, 9)
	want := []time.Duration{250, 500, 1000, 2000, 4000, 8000, 16000, 30000, 30000}
	for i := range want {
		if got[i] != want[i]*time.Millisecond {
			t.Fatalf("wait %d = %s, want %s (all: %v)", i, got[i], want[i]*time.Millisecond, got)
		}
	}
}

func TestEqualJitter(t *testing.T) {
	b := &Backoff{Min: 100 * time.Millisecond, Max: time.Second}
	now := time.Unix(1_700_000_000, 0)
	step := 100 * time.Millisecond
	for range 20 {
		w := b.Next(now)
		if w < step/2 || w > step {
			t.Fatalf("wait %s outside [%s, %s]", w, step/2, step)
		}
		step = min(step*2, time.Second)
	}
}

// After a stream that worked ends, waits start from Min again and stay
// within RecoverMax for RecoverFor, even when the attempts keep failing (a
// server restart that takes a while); after that they grow to Max again.
func TestLostCapsWaitsWhileRecovering(t *testing.T) {
	b := &Backoff{Min: 250 * time.Millisecond, Max: 30 * time.Second, RecoverMax: 2 * time.Second,
		RecoverFor: 20 * time.Second, Jitter: full}
	now := time.Unix(1_700_000_000, 0)
	waits(b, &now, 10) // the step is at Max
	if w := b.Next(now); w != 30*time.Second {
		t.Fatalf("before Lost: %s", w)
	}
	b.Lost(now)
	lost := now
	got := waits(b, &now, 4)
	want := []time.Duration{250 * time.Millisecond, 500 * time.Millisecond, time.Second, 2 * time.Second}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("after Lost: wait %d = %s, want %s", i, got[i], want[i])
		}
	}
	for now.Sub(lost) < 20*time.Second {
		if w := b.Next(now); w > 2*time.Second {
			t.Fatalf("%s after Lost: wait %s above the recovery cap", now.Sub(lost), w)
		} else {
			now = now.Add(w)
		}
	}
	// Past the recovery period the steps grow again.
	got = waits(b, &now, 5)
	if got[len(got)-1] != 30*time.Second {
		t.Fatalf("after the recovery period: %v, want growth to 30s", got)
	}
}

func TestResetRestartsWithoutRecoveryCap(t *testing.T) {
	b := &Backoff{Min: time.Second, Max: time.Minute, Jitter: full}
	now := time.Unix(1_700_000_000, 0)
	waits(b, &now, 5)
	b.Reset()
	if w := b.Next(now); w != time.Second {
		t.Fatalf("after Reset: %s", w)
	}
}
