//go:build linux

package lab

import (
	"context"
	"sync"
	"testing"
	"time"
)

// TestServerRestartReconnect stops `meshd all` for a while, as a slow
// restart or an upgrade would, and measures how long after it is back the
// agents are connected to control and signal again. Their streams had
// worked for a while before, so their reconnect waits stay short however
// many attempts fail during the outage.
func TestServerRestartReconnect(t *testing.T) {
	ctx := context.Background()
	l := New(t)
	a := l.Host("a", l.Router("ra", Home))
	b := l.Host("b", l.Router("rb", Home))
	srv, ag := startMesh(ctx, t, l, a, b)
	connect(ctx, t, ag[0], ag[1], 30*time.Second)
	// Let the streams live long enough to count as working ones (the
	// clients' StableAfter, 10 s), pinging meanwhile.
	if got, out := pingSeries(ctx, a, ag[1].OverlayIP(), 60); got < 55 {
		t.Fatalf("a → b answered %d of 60 pings:\n%s", got, out)
	}
	l.Step("a pings b for 12 s")

	if err := srv.Proc.Stop(); err != nil {
		t.Logf("meshd all stopped: %v", err)
	}
	// Down for 15 s: long enough that waits doubling from a fraction of a
	// second would have reached 8–16 s. The tunnel keeps working.
	if got, out := pingSeries(ctx, a, ag[1].OverlayIP(), 75); got < 70 {
		t.Errorf("with the server down, a → b answered %d of 75 pings:\n%s", got, out)
	}
	l.Step("server down for 15 s")

	if err := srv.Start(ctx); err != nil {
		t.Fatalf("restart meshd all: %v", err)
	}
	back := time.Now()
	l.Step("server back")
	took := make([]time.Duration, len(ag))
	var wg sync.WaitGroup
	for i, x := range ag {
		wg.Go(func() {
			wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
			defer cancel()
			_, err := x.WaitStatus(wctx, "control and signal connected", func(st *Status) bool {
				return st.Self.Control.State == "connected" && st.Self.Signal.State == "connected"
			})
			if err != nil {
				t.Error(err)
			}
			took[i] = time.Since(back)
		})
	}
	wg.Wait()
	for i, d := range took {
		t.Logf("agent %s: control and signal connected %s after the server was back", ag[i].Host.Name(), d.Round(100*time.Millisecond))
		if d > 5*time.Second {
			t.Errorf("agent %s took %s to reconnect, want under 5 s", ag[i].Host.Name(), d)
		}
	}
	connect(ctx, t, ag[0], ag[1], 10*time.Second)
}
