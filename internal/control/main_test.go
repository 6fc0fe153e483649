package control_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"

	"go.uber.org/goleak"

	controlv1 "meshd/api/control/v1"
	"meshd/internal/controlclient"
	"meshd/internal/keys"
)

func TestMain(m *testing.M) {
	if os.Getenv(agentsEnv) != "" {
		os.Exit(runAgents())
	}
	// The shared PostgreSQL server (pgtest.Shared) outlives the tests.
	goleak.VerifyTestMain(m, goleak.IgnoreAnyFunction("meshd/internal/pgtest.(*Server).startWatchdog.func1"))
}

// agentsEnv makes the test binary a process of fake agents (see
// BenchmarkMemoryPerConnectedPeer): MESHD_BENCH_AGENTS=N, with
// MESHD_BENCH_URL, MESHD_BENCH_PIN and MESHD_BENCH_KEYS (agent i joins with
// key i mod len, comma-separated). Each agent has its own
// connection, as real agents do. It prints "ready" once every agent has its
// first map and runs until its stdin closes.
const agentsEnv = "MESHD_BENCH_AGENTS"

func runAgents() int {
	n, _ := strconv.Atoi(os.Getenv(agentsEnv))
	url, pin := os.Getenv("MESHD_BENCH_URL"), os.Getenv("MESHD_BENCH_PIN")
	setupKeys := strings.Split(os.Getenv("MESHD_BENCH_KEYS"), ",")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var ready sync.WaitGroup
	for i := range n {
		priv, _ := keys.Generate()
		c, err := controlclient.New(controlclient.Options{URL: url, Pin: pin, Private: priv,
			Meta: controlclient.Meta{Hostname: fmt.Sprintf("mem-%d", i), OS: "linux", Version: "bench"}})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		if _, err := c.Login(ctx, setupKeys[i%len(setupKeys)]); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		ready.Add(1)
		var once sync.Once
		go c.Sync(ctx, func(*controlv1.NetworkMap) { once.Do(ready.Done) }, nil)
	}
	ready.Wait()
	fmt.Println("ready")
	bufio.NewReader(os.Stdin).ReadString('\n') // until the parent closes stdin
	return 0
}
