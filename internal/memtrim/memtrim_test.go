package memtrim

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap/zaptest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const mib = 1 << 20

// step is one tick of a policy scenario: the traffic counter and the
// retained memory at that second, and whether the policy must trim.
type step struct {
	traffic  uint64
	retained uint64
	trim     bool
}

// run feeds steps one second apart and calls Trimmed (retained after the
// trim: the step's retained minus freed) whenever the policy says so.
func run(t *testing.T, p *Policy, freed uint64, steps []step) {
	t.Helper()
	t0 := time.Unix(1000, 0)
	for i, s := range steps {
		smp := Sample{At: t0.Add(time.Duration(i) * time.Second), Traffic: s.traffic, Retained: s.retained}
		got := p.Observe(smp)
		if got != s.trim {
			t.Fatalf("second %d (traffic %d, retained %d MiB): trim=%v, want %v", i, s.traffic, s.retained/mib, got, s.trim)
		}
		if got {
			smp.Retained -= freed
			p.Trimmed(smp)
		}
	}
}

func TestPolicyTrimsOnceAfterABurst(t *testing.T) {
	p := &Policy{} // defaults: quiet 2 s under 64 KiB/s, growth 4 MiB
	run(t, p, 150*mib, []step{
		{0, 40 * mib, false},
		{1 << 20, 40 * mib, false},        // 1 MiB/s: busy
		{300 << 20, 120 * mib, false},     // bulk transfer
		{600 << 20, 190 * mib, false},     // still going
		{600<<20 + 100, 190 * mib, false}, // quiet 1 s (keepalives)
		{600<<20 + 200, 190 * mib, true},  // quiet 2 s: trim
		{600<<20 + 300, 41 * mib, false},  // back at the floor: nothing to do
		{600<<20 + 400, 43 * mib, false},  // a little growth is not worth a GC
		{600<<20 + 500, 41 * mib, false},
	})
}

func TestPolicyNeverTrimsWhileTrafficFlows(t *testing.T) {
	p := &Policy{}
	var steps []step
	for i := range 30 {
		steps = append(steps, step{traffic: uint64(i) * (10 << 20), retained: uint64(40+i*5) * mib})
	}
	run(t, p, 0, steps)
}

func TestPolicyNeedsGrowth(t *testing.T) {
	// Quiet all along, memory steady: a trim would only cost a GC.
	p := &Policy{}
	var steps []step
	for range 20 {
		steps = append(steps, step{traffic: 0, retained: 50 * mib})
	}
	run(t, p, 0, steps)
}

// TestPolicyTrimsIdleGarbage: an agent with many peers and a quiet tunnel
// allocates a little all the time (ICE checks, signal); the GC, whose goal
// counts wireguard-go's untouched buffers as live heap, lets that garbage
// pile up. The default policy gives it back once it is a few MiB, at most
// every MinGap (with a larger threshold, many idle peers held
// 40 MB anonymous memory; 25 MB with 4 MiB).
func TestPolicyTrimsIdleGarbage(t *testing.T) {
	p := &Policy{} // the defaults
	t0 := time.Unix(1000, 0)
	const floor = 60 * mib // after a trim: live heap plus untouched buffers
	retained := uint64(floor)
	var trims []int
	for i := range 40 {
		retained += mib / 2 // garbage, 0.5 MiB/s
		s := Sample{At: t0.Add(time.Duration(i) * time.Second), Traffic: uint64(i) * 200, Retained: retained}
		if p.Observe(s) {
			trims = append(trims, i)
			retained = floor
			s.Retained = retained
			p.Trimmed(s)
		}
	}
	// 4 MiB above the first sample after 8 s, then every MinGap (10 s).
	if want := []int{8, 18, 28, 38}; !slices.Equal(trims, want) {
		t.Fatalf("idle trims at seconds %v, want %v", trims, want)
	}
}

func TestPolicyMinGap(t *testing.T) {
	// Memory rises without traffic and a trim gives little back: trims
	// come at most every MinGap.
	p := &Policy{Quiet: time.Second, MinGap: 5 * time.Second, Growth: 8 * mib}
	run(t, p, 1*mib, []step{
		{0, 10 * mib, false},
		{0, 20 * mib, true}, // quiet 1 s, grew 10 MiB
		{0, 30 * mib, false},
		{0, 40 * mib, false},
		{0, 50 * mib, false},
		{0, 60 * mib, false},
		{0, 70 * mib, true}, // 5 s after the last trim
	})
}

func TestPolicyCounterRestart(t *testing.T) {
	// A new device starts its counter at zero: what it moved since counts,
	// the drop does not read as an enormous rate nor as silence.
	p := &Policy{}
	run(t, p, 100*mib, []step{
		{900 << 20, 40 * mib, false},
		{900 << 20, 40 * mib, false},
		{50 << 20, 140 * mib, false}, // new device, 50 MiB moved: busy
		{50 << 20, 140 * mib, false},
		{50 << 20, 140 * mib, true},
	})
}

// TestTrimmerRun drives the goroutine with fake memory and a fake clock:
// it trims (twice freeing) once traffic stops, and only then.
func TestTrimmerRun(t *testing.T) {
	tr := New(Options{Interval: time.Millisecond, Log: zaptest.NewLogger(t),
		Policy: Policy{Quiet: 3 * time.Second, Growth: mib}})
	var (
		mu       sync.Mutex
		clock    = time.Unix(1000, 0)
		retained = uint64(10 * mib)
		frees    int
	)
	var traffic atomic.Uint64
	tr.now = func() time.Time { mu.Lock(); defer mu.Unlock(); clock = clock.Add(time.Second); return clock }
	tr.retained = func() uint64 { mu.Lock(); defer mu.Unlock(); return retained }
	tr.free = func() { mu.Lock(); defer mu.Unlock(); frees++; retained = 10 * mib }
	tr.Watch(func() uint64 { return traffic.Add(1 << 20) }) // 1 MiB per tick: busy

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); tr.Run(ctx) }()
	defer func() { cancel(); <-done }()

	waitClock := func(until time.Time) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
			mu.Lock()
			c := clock
			mu.Unlock()
			if c.After(until) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatal("trimmer does not tick")
			}
		}
	}
	// Busy for a while, memory grows: no trim however much is held.
	waitClock(time.Unix(1005, 0))
	mu.Lock()
	retained = 100 * mib
	mu.Unlock()
	waitClock(time.Unix(1020, 0))
	if s := tr.Stats(); s.Trims != 0 {
		t.Fatalf("trimmed while traffic flowed: %+v", s)
	}
	tr.Watch(func() uint64 { return traffic.Load() }) // traffic stops
	for deadline := time.Now().Add(5 * time.Second); tr.Stats().Trims == 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no trim after traffic stopped")
		}
	}
	s := tr.Stats()
	mu.Lock()
	f := frees
	mu.Unlock()
	if s.Trims != 1 || s.Released != 90*mib || f != 2 {
		t.Fatalf("after one trim: %+v, %d frees; want 1 trim releasing 90 MiB with 2 frees", s, f)
	}
}

// TestRetainedReader checks the real reading: positive, and it falls when
// a large freed allocation is given back.
func TestRetainedReader(t *testing.T) {
	read := newRetainedReader()
	buf := make([]byte, 64*mib)
	for i := range buf {
		buf[i] = byte(i)
	}
	high := read()
	buf = nil
	_ = buf
	tr := New(Options{})
	tr.free()
	tr.free()
	low := read()
	if high == 0 || low >= high || high-low < 32*mib {
		t.Fatalf("retained %d MiB with 64 MiB live, %d MiB after freeing it", high/mib, low/mib)
	}
}
