// Package memtrim gives the agent's memory back to the operating system once
// its tunnel has gone quiet.
//
// Why: wireguard-go moves every packet in a 64 KiB buffer from pools that
// are unbounded on Linux, so a bulk transfer leaves the agent holding
// hundreds of MB of buffers (BenchmarkAgentMemory, bench/NOTES.md).
// Nothing gives them back on its own: once traffic stops nothing allocates,
// so no GC runs, sync.Pool keeps its buffers, and the runtime's background
// scavenger keeps what the last heap goal allowed. A Trimmer watches the
// data plane's byte counter and the runtime's retained memory; when the
// counter has stayed flat for a while and the runtime holds notably more
// than after the last trim, it calls debug.FreeOSMemory twice (sync.Pool
// keeps a victim generation for one more GC). It never trims while
// traffic flows, so the hot path pays nothing; idle, it costs one cheap
// poll a second.
//
// Policy is the decision alone (no clock, no I/O), fed one Sample per
// tick; Trimmer is the goroutine around it. roles/agent wires a Trimmer to
// the WireGuard device's wg.Counters (flag --mem-trim).
package memtrim

import (
	"context"
	"runtime/debug"
	"runtime/metrics"
	"sync"
	"time"

	"go.uber.org/zap"
)

// Defaults of Policy and Options.
const (
	DefaultQuiet     = 2 * time.Second
	DefaultQuietRate = 64 << 10 // bytes per second
	DefaultGrowth    = 4 << 20
	DefaultMinGap    = 10 * time.Second
	DefaultInterval  = time.Second
)

// Sample is what a Policy sees at one tick.
type Sample struct {
	At time.Time
	// Traffic is a counter that grows with the data plane's traffic
	// (bytes received plus sent); it may restart from zero (a new device).
	Traffic uint64
	// Retained is the memory the Go runtime holds from the OS: everything
	// it mapped minus what it released (runtime/metrics).
	Retained uint64
}

// Policy decides when to trim. Zero fields take the defaults. Not safe for
// concurrent use.
type Policy struct {
	// Quiet is how long traffic must stay under QuietRate before a trim.
	Quiet time.Duration
	// QuietRate is the traffic, in bytes per second, that still counts as
	// quiet: keepalives, handshakes and an idle SSH session are below it.
	QuietRate uint64
	// Growth is how far Retained must have risen above its lowest level
	// since the last trim (or the start) for a trim to be worth a GC.
	//
	// The default is small (4 MiB) because of what counts as live heap in
	// the agent: wireguard-go's receive and TUN routines hold 4 × 128
	// message buffers of 64 KiB (32 MiB) from the start, mostly never
	// touched, so not resident. The GC's own goal (GOGC=100: twice the live
	// heap) then lets an idle agent pile up as much resident garbage again
	// before it collects (bench/NOTES.md compares Growth values on an idle
	// agent with many peers). A small Growth keeps an
	// idle agent near its floor for at most two GCs every MinGap.
	Growth uint64
	// MinGap is the least time between two trims: it bounds what trimming
	// can cost a process whose memory keeps rising without traffic.
	MinGap time.Duration

	started  bool
	prev     Sample
	lastBusy time.Time
	lastTrim time.Time
	floor    uint64
}

func (p *Policy) fill() {
	if p.Quiet <= 0 {
		p.Quiet = DefaultQuiet
	}
	if p.QuietRate == 0 {
		p.QuietRate = DefaultQuietRate
	}
	if p.Growth == 0 {
		p.Growth = DefaultGrowth
	}
	if p.MinGap <= 0 {
		p.MinGap = DefaultMinGap
	}
}

// Observe takes the sample of one tick and reports whether to trim now.
// After trimming, pass the sample taken then to Trimmed.
func (p *Policy) Observe(s Sample) bool {
	if !p.started {
		p.fill()
		p.started = true
		p.prev, p.lastBusy, p.floor = s, s.At, s.Retained
		return false
	}
	moved := s.Traffic - p.prev.Traffic
	if s.Traffic < p.prev.Traffic {
		moved = s.Traffic // the counter restarted
	}
	if dt := s.At.Sub(p.prev.At); dt > 0 && float64(moved) > float64(p.QuietRate)*dt.Seconds() {
		p.lastBusy = s.At
	}
	p.prev = s
	p.floor = min(p.floor, s.Retained)
	return s.At.Sub(p.lastBusy) >= p.Quiet &&
		s.Retained >= p.floor+p.Growth &&
		(p.lastTrim.IsZero() || s.At.Sub(p.lastTrim) >= p.MinGap)
}

// Trimmed records a trim: s (taken after it) is the new floor.
func (p *Policy) Trimmed(s Sample) {
	p.lastTrim = s.At
	p.floor = s.Retained
	p.prev.Retained = s.Retained
}

// Options configure a Trimmer.
type Options struct {
	Policy Policy
	// Interval between two samples (default 1 s).
	Interval time.Duration
	Log      *zap.Logger
}

// Stats say what a Trimmer did.
type Stats struct {
	Trims int
	// Released is the retained memory the trims gave back, in total.
	Released uint64
	// Last is the time of the last trim (zero: none yet).
	Last time.Time
}

// Trimmer runs a Policy against the process's memory. Make it with New,
// point it at the data plane with Watch, run it with Run.
type Trimmer struct {
	opts Options
	log  *zap.Logger

	mu      sync.Mutex
	traffic func() uint64
	stats   Stats

	// for tests
	now      func() time.Time
	retained func() uint64
	free     func()
}

// New returns a Trimmer; it does nothing until Run.
func New(opts Options) *Trimmer {
	if opts.Interval <= 0 {
		opts.Interval = DefaultInterval
	}
	if opts.Log == nil {
		opts.Log = zap.NewNop()
	}
	return &Trimmer{opts: opts, log: opts.Log, now: time.Now, retained: newRetainedReader(), free: debug.FreeOSMemory}
}

// Watch sets the traffic counter to watch (nil: none; the process then
// counts as always quiet). Call it again when the data plane is replaced.
func (t *Trimmer) Watch(traffic func() uint64) {
	t.mu.Lock()
	t.traffic = traffic
	t.mu.Unlock()
}

// Stats returns what the Trimmer did so far.
func (t *Trimmer) Stats() Stats {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.stats
}

// Run samples every Interval until ctx ends.
func (t *Trimmer) Run(ctx context.Context) {
	tick := time.NewTicker(t.opts.Interval)
	defer tick.Stop()
	p := t.opts.Policy
	for {
		if p.Observe(t.sample()) {
			t.trim(&p)
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

func (t *Trimmer) sample() Sample {
	t.mu.Lock()
	f := t.traffic
	t.mu.Unlock()
	s := Sample{At: t.now(), Retained: t.retained()}
	if f != nil {
		s.Traffic = f()
	}
	return s
}

// trim frees twice: the first GC moves sync.Pool's contents to its victim
// cache, the second frees them; each returns what is free to the OS.
func (t *Trimmer) trim(p *Policy) {
	start := time.Now()
	before := t.retained()
	t.free()
	t.free()
	after := t.sample()
	p.Trimmed(after)
	released := uint64(0)
	if before > after.Retained {
		released = before - after.Retained
	}
	t.mu.Lock()
	t.stats.Trims++
	t.stats.Released += released
	t.stats.Last = after.At
	t.mu.Unlock()
	t.log.Debug("returned memory to the OS after traffic", zap.Uint64("retained_before", before),
		zap.Uint64("retained_after", after.Retained), zap.Duration("took", time.Since(start)))
}

// newRetainedReader returns a function that reads the memory the runtime
// holds from the OS: all it mapped (/memory/classes/total) minus the heap
// it released (/memory/classes/heap/released). Not safe for concurrent use.
func newRetainedReader() func() uint64 {
	s := []metrics.Sample{{Name: "/memory/classes/total:bytes"}, {Name: "/memory/classes/heap/released:bytes"}}
	return func() uint64 {
		metrics.Read(s)
		if s[0].Value.Kind() != metrics.KindUint64 || s[1].Value.Kind() != metrics.KindUint64 {
			return 0
		}
		return s[0].Value.Uint64() - s[1].Value.Uint64()
	}
}
