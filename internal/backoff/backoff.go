// Package backoff is the reconnect policy of the agent's long-lived streams
// (control's map stream, the signal stream): exponential backoff with equal
// jitter, and a lower cap for a while after a stream that had worked ended.
// A stream that worked and then dropped is most often a server restart or a
// network change, over in seconds; waiting tens of seconds there leaves the
// peer cut off long after the server is back. A server that stays down
// still sees the waits grow to the full cap once the recovery period ends.
// internal/controlclient and internal/signalclient import it.
package backoff

import (
	"math/rand/v2"
	"time"
)

// Defaults for zero fields of Backoff.
const (
	DefaultRecoverMax = 2 * time.Second
	DefaultRecoverFor = time.Minute
)

// Backoff says how long to wait before each reconnect. The zero value is not
// usable: set Min and Max. It is not safe for concurrent use (one per
// reconnect loop).
type Backoff struct {
	// Min is the first wait's step, Max the largest step.
	Min, Max time.Duration
	// RecoverMax caps the step during RecoverFor after a stream that had
	// worked ended (see Lost); zero: DefaultRecoverMax, DefaultRecoverFor.
	RecoverMax, RecoverFor time.Duration
	// Jitter returns a uniform value in [0, n]; nil: math/rand/v2. Tests
	// set it to make waits exact.
	Jitter func(n time.Duration) time.Duration

	cur    time.Duration
	lostAt time.Time // when a working stream ended; zero: never
}

// Lost records that a stream that had worked ended at now: the next wait
// starts again from Min, and steps stay within RecoverMax until RecoverFor
// has passed.
func (b *Backoff) Lost(now time.Time) {
	b.cur = 0
	b.lostAt = now
}

// Reset starts the steps again from Min without the recovery cap.
func (b *Backoff) Reset() { b.cur = 0 }

// Next returns the wait before the next attempt, made at now: between half
// and all of the current step (equal jitter, so that peers cut off together
// do not all come back at the same moment), and doubles the step.
func (b *Backoff) Next(now time.Time) time.Duration {
	hi := b.Max
	if !b.lostAt.IsZero() && now.Sub(b.lostAt) < b.recoverFor() {
		hi = min(hi, b.recoverMax())
	}
	if b.cur == 0 {
		b.cur = b.Min
	}
	step := min(b.cur, hi)
	b.cur = min(step*2, b.Max)
	if b.cur <= 0 { // overflow
		b.cur = b.Max
	}
	return step/2 + b.jitter(step/2)
}

func (b *Backoff) jitter(n time.Duration) time.Duration {
	if b.Jitter != nil {
		return b.Jitter(n)
	}
	return rand.N(n + 1)
}

func (b *Backoff) recoverMax() time.Duration {
	if b.RecoverMax > 0 {
		return b.RecoverMax
	}
	return DefaultRecoverMax
}

func (b *Backoff) recoverFor() time.Duration {
	if b.RecoverFor > 0 {
		return b.RecoverFor
	}
	return DefaultRecoverFor
}
