package signal

import (
	"sync"
	"time"

	"meshd/internal/keys"
)

// bucket is a token bucket: rate tokens a second, at most burst saved up.
type bucket struct {
	mu     sync.Mutex
	tokens float64
	last   time.Time
}

// take takes one token; when there is none it says how long until there is.
func (b *bucket) take(now time.Time, rate float64, burst int) (ok bool, wait time.Duration) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.refill(now, rate, burst)
	if b.tokens >= 1 {
		b.tokens--
		return true, 0
	}
	return false, time.Duration((1 - b.tokens) / rate * float64(time.Second))
}

func (b *bucket) refill(now time.Time, rate float64, burst int) {
	if dt := now.Sub(b.last); dt > 0 {
		b.tokens += dt.Seconds() * rate
		b.last = now
	}
	if b.tokens > float64(burst) {
		b.tokens = float64(burst)
	}
}

// full reports whether the bucket has refilled completely, so that
// forgetting it changes nothing.
func (b *bucket) full(now time.Time, rate float64, burst int) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.refill(now, rate, burst)
	return b.tokens >= float64(burst)
}

// limiters keeps one bucket per peer key, so that reconnecting does not
// refill a peer's bucket. Buckets of peers without a stream are forgotten
// once they are full again.
type limiters struct {
	rate  float64
	burst int

	mu      sync.Mutex
	buckets map[keys.Key]*limiterEntry
	next    time.Time // next sweep
}

type limiterEntry struct {
	b     *bucket
	users int // streams holding b
}

func newLimiters(rate float64, burst int) *limiters {
	return &limiters{rate: rate, burst: burst, buckets: make(map[keys.Key]*limiterEntry)}
}

// acquire returns the bucket of key; release it when the stream ends.
func (l *limiters) acquire(key keys.Key, now time.Time) *bucket {
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.After(l.next) {
		for k, e := range l.buckets {
			if e.users == 0 && e.b.full(now, l.rate, l.burst) {
				delete(l.buckets, k)
			}
		}
		l.next = now.Add(time.Minute)
	}
	e := l.buckets[key]
	if e == nil {
		e = &limiterEntry{b: &bucket{tokens: float64(l.burst), last: now}}
		l.buckets[key] = e
	}
	e.users++
	return e.b
}

func (l *limiters) release(key keys.Key) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if e := l.buckets[key]; e != nil {
		e.users--
	}
}

func (l *limiters) take(b *bucket, now time.Time) (bool, time.Duration) {
	return b.take(now, l.rate, l.burst)
}
