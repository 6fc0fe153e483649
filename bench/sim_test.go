//go:build linux

package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"slices"
	"sync"
	"syscall"
	"time"

	controlv1 "meshd/api/control/v1"
	"meshd/internal/controlclient"
	"meshd/internal/keys"
	"meshd/internal/signalclient"
)

// simEnv makes the test binary a process of simulated agents (see
// BenchmarkServer): MESHD_BENCH_SIM=<simConfig as JSON>. It prints
// "result {simResult}" once every agent has joined and "ready {simReady}"
// once every signal stream is up, then keeps them until SIGTERM.
const simEnv = "MESHD_BENCH_SIM"

// simConfig configures the simulated agents.
type simConfig struct {
	URL, Pin    string   // control's
	Keys        []string // setup keys; agent i joins with Keys[i % len]
	N           int
	Concurrency int  // joins in flight at once
	Signal      bool // open a signal stream per agent after the joins
}

// simResult is what the joins took.
type simResult struct {
	N              int     `json:"n"`
	Seconds        float64 `json:"seconds"`
	JoinsPerSecond float64 `json:"joins_per_s"`
	P50ms          float64 `json:"p50_ms"`
	P90ms          float64 `json:"p90_ms"`
	MaxMS          float64 `json:"max_ms"`
}

// simReady says how long the signal streams took.
type simReady struct {
	Seconds float64 `json:"seconds"`
}

// simAgent is one simulated agent.
type simAgent struct {
	priv      keys.Private
	signalURL string
	signalPin string
}

// joinTimeout bounds one agent's join.
const joinTimeout = 2 * time.Minute

// runSim is the simulated-agents process; it returns the exit code.
func runSim(raw string) int {
	var cfg simConfig
	if err := json.Unmarshal([]byte(raw), &cfg); err != nil || cfg.N <= 0 || len(cfg.Keys) == 0 {
		fmt.Fprintf(os.Stderr, "sim: bad %s: %v\n", simEnv, err)
		return 2
	}
	cfg.Concurrency = max(1, cfg.Concurrency)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	var streams sync.WaitGroup // every Sync and signal Run; they end with ctx
	defer streams.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	agents := make([]*simAgent, cfg.N)
	lat := make([]float64, cfg.N)
	errs := make([]error, cfg.N)
	jobs := make(chan int)
	var workers sync.WaitGroup
	start := time.Now()
	for range cfg.Concurrency {
		workers.Go(func() {
			for i := range jobs {
				t0 := time.Now()
				agents[i], errs[i] = simJoin(ctx, cfg, i, &streams)
				lat[i] = float64(time.Since(t0)) / float64(time.Millisecond)
			}
		})
	}
	for i := range cfg.N {
		jobs <- i
	}
	close(jobs)
	workers.Wait()
	wall := time.Since(start)
	if err := errors.Join(errs...); err != nil {
		fmt.Printf("error %v\n", err)
		return 1
	}
	slices.Sort(lat)
	q := func(f float64) float64 { return lat[int(f*float64(len(lat)-1)+0.5)] }
	res, _ := json.Marshal(simResult{N: cfg.N, Seconds: wall.Seconds(), JoinsPerSecond: float64(cfg.N) / wall.Seconds(),
		P50ms: q(0.5), P90ms: q(0.9), MaxMS: lat[len(lat)-1]})
	fmt.Printf("result %s\n", res)

	start = time.Now()
	if cfg.Signal {
		clients := make([]*signalclient.Client, cfg.N)
		for i, a := range agents {
			c, err := signalclient.New(signalclient.Options{URL: a.signalURL, Pin: a.signalPin, Private: a.priv})
			if err != nil {
				fmt.Printf("error signal %d: %v\n", i, err)
				return 1
			}
			clients[i] = c
			streams.Go(func() { c.Run(ctx) })
		}
		wctx, wcancel := context.WithTimeout(ctx, 3*time.Minute)
		defer wcancel()
		for i, c := range clients {
			if err := c.WaitConnected(wctx); err != nil {
				fmt.Printf("error signal %d: %v (%v)\n", i, err, c.State().LastError)
				return 1
			}
		}
	}
	ready, _ := json.Marshal(simReady{Seconds: time.Since(start).Seconds()})
	fmt.Printf("ready %s\n", ready)
	<-ctx.Done()
	return 0
}

// simJoin joins agent i: Login (a challenge and the login) then Sync (a
// challenge and the stream) until the first map. The stream stays open,
// owned by streams, until ctx ends.
func simJoin(ctx context.Context, cfg simConfig, i int, streams *sync.WaitGroup) (*simAgent, error) {
	priv, err := keys.Generate()
	if err != nil {
		return nil, err
	}
	c, err := controlclient.New(controlclient.Options{URL: cfg.URL, Pin: cfg.Pin, Private: priv,
		Meta: controlclient.Meta{Hostname: fmt.Sprintf("sim-%d", i), OS: "linux", Version: "bench"}})
	if err != nil {
		return nil, err
	}
	jctx, cancel := context.WithTimeout(ctx, joinTimeout)
	defer cancel()
	if _, err := c.Login(jctx, cfg.Keys[i%len(cfg.Keys)]); err != nil {
		return nil, fmt.Errorf("agent %d: %w", i, err)
	}
	first := make(chan *simAgent, 1)
	streams.Go(func() {
		c.Sync(ctx, func(m *controlv1.NetworkMap) {
			select {
			case first <- &simAgent{priv: priv, signalURL: m.SignalUrl, signalPin: m.SignalTlsPin}:
			default:
			}
		}, nil)
	})
	select {
	case a := <-first:
		return a, nil
	case <-jctx.Done():
		return nil, fmt.Errorf("agent %d: no first map: %w", i, jctx.Err())
	}
}
