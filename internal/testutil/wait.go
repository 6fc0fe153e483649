// Package testutil holds the helpers every package's tests share. Only tests
// import it.
package testutil

import (
	"fmt"
	"testing"
	"time"
)

// Pace is how often WaitFor tries its condition again.
const Pace = 5 * time.Millisecond

// WaitFor polls cond every Pace until it holds, and fails tb when d passes
// first, naming what it waited for. The loop is bounded in time (d) and in
// count (d/Pace plus a margin), so a test never spins forever.
func WaitFor(tb testing.TB, d time.Duration, what string, cond func() bool) {
	tb.Helper()
	WaitEvery(tb, d, Pace, what, cond)
}

// WaitEvery is WaitFor at another pace, for conditions that are costly to
// check (a command run in a namespace).
func WaitEvery(tb testing.TB, d, pace time.Duration, what string, cond func() bool) {
	tb.Helper()
	if err := poll(d, pace, cond); err != nil {
		tb.Fatalf("timed out after %v waiting for %s", d, what)
	}
}

// Poll is WaitFor without a testing.TB: it returns an error when cond did
// not hold within d (for helpers that add their own context to a failure).
func Poll(d time.Duration, cond func() bool) error { return poll(d, Pace, cond) }

func poll(d, pace time.Duration, cond func() bool) error {
	deadline := time.Now().Add(d)
	limit := int(d/pace) + 100
	for i := 0; ; i++ {
		if cond() {
			return nil
		}
		if i >= limit || !time.Now().Before(deadline) {
			return fmt.Errorf("testutil: condition not met within %v", d)
		}
		time.Sleep(pace)
	}
}
