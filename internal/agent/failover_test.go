package agent

import (
	"net"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"meshd/internal/testutil"
)

// The replica an agent streams from dies: the agent streams from another
// within 10 s, and its tunnel carries traffic all along.
func TestAgentMovesToAnotherReplica(t *testing.T) {
	w := newWorld(t)
	target := w.control.Server.Listener.Addr().String()
	// Two forwarders to one control stand for two replicas: they share
	// the store and the certificate.
	one, two := testutil.Forward(t, "", target), testutil.Forward(t, "", target)
	a := w.agentWith("repla", func(o *Options) { o.ControlURL, o.ControlURLs = one.URL(), []string{two.URL()} })
	b := w.agent("replb")
	da, _ := waitUp(t, a)
	_, ipb := waitUp(t, b)
	waitPing(t, da, ipb, 15*time.Second)
	testutil.WaitFor(t, 10*time.Second, "a streaming from the first replica", func() bool {
		c := a.Status().Self.Control
		return c.Url == one.URL() && c.State == StateConnected
	})

	one.Kill()
	killed := time.Now()
	// Maps list the control's own URL too (its replica list): the agent
	// may move there or to two; anywhere but one.
	pings := 0
	pace := time.NewTicker(50 * time.Millisecond) // one ping per tick
	defer pace.Stop()
	for {
		c := a.Status().Self.Control
		if c.Url != one.URL() && c.State == StateConnected {
			break
		}
		if time.Since(killed) > 10*time.Second {
			t.Fatalf("10 s after the replica died control is %s at %s (%s)", c.State, c.Url, c.Error)
		}
		// The tunnel does not wait for control.
		waitPing(t, da, ipb, 2*time.Second)
		pings++
		<-pace.C
	}
	t.Logf("streaming from %s %s after the first replica died; %d pings answered meanwhile",
		a.Status().Self.Control.Url, time.Since(killed).Round(time.Millisecond), pings)
	waitPing(t, da, ipb, 2*time.Second)
}

// A join token whose first control URL is dead joins through the next one;
// the state file keeps the first as given (the user's) and the others.
func TestAgentJoinsThroughSecondURL(t *testing.T) {
	w := newWorld(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "https://" + ln.Addr().String()
	ln.Close()
	dir := ""
	a := w.agentWith("joina", func(o *Options) {
		o.ControlURL, o.ControlURLs = dead, []string{w.control.URL}
		dir = o.StateDir
	})
	waitUp(t, a)
	if c := a.Status().Self.Control; c.Url != w.control.URL {
		t.Fatalf("control %+v, want the second URL", c)
	}
	st := readSaved(t, dir)
	if st.ControlURL != dead || !slices.Equal(st.ControlURLs, []string{w.control.URL}) || !st.Joined {
		t.Fatalf("state %+v", st)
	}
}

// The control URLs of the maps are saved and known after a restart; a
// token for the same control adds its URLs to them.
func TestControlURLsSurviveRestart(t *testing.T) {
	h := newHarness(t)
	h.hub.mu.Lock()
	h.hub.ctlURLs = []string{"fake://control", "fake://b"}
	h.hub.mu.Unlock()
	dir := filepath.Join(t.TempDir(), "state")
	n := h.start(dir, "SETUP", false)
	testutil.WaitFor(t, 10*time.Second, "the map's URLs saved", func() bool {
		return slices.Equal(readSaved(t, dir).ControlURLs, []string{"fake://control", "fake://b"})
	})
	n.stop()

	_, st, lock, err := openState(dir)
	if err != nil {
		t.Fatal(err)
	}
	lock.release()
	if st.ControlURL != "fake://control" || !slices.Equal(st.ControlURLs, []string{"fake://control", "fake://b"}) {
		t.Fatalf("state read back: %+v", st)
	}
	e, err := New(Options{StateDir: dir, Clients: fakeClients(h.hub, h.bus), ControlURL: "fake://control", ControlURLs: []string{"fake://c"}})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if got := e.controlURLs(); !slices.Equal(got, []string{"fake://c", "fake://control", "fake://b"}) {
		t.Fatalf("URLs after a restart with a token = %v", got)
	}
}
