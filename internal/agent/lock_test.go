//go:build unix

package agent

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"meshd/internal/testutil"
)

// TestSecondAgentOnOneStateDirStops: while one agent runs on a state
// directory a second one is refused at New, with a message naming the
// holder's PID and the lock file, before it touches the identity; once
// the first stops the directory is free again.
func TestSecondAgentOnOneStateDirStops(t *testing.T) {
	h := newHarness(t)
	dir := filepath.Join(t.TempDir(), "state")
	a := h.start(dir, "SETUP", false)
	testutil.WaitFor(t, 5*time.Second, "up", func() bool { return a.e.Status().State == "up" })
	before, err := os.ReadFile(filepath.Join(dir, StateFile))
	if err != nil {
		t.Fatal(err)
	}

	_, err = New(Options{StateDir: dir, ControlURL: "fake://control", SetupKey: "SETUP", Clients: fakeClients(h.hub, h.bus)})
	if err == nil {
		t.Fatal("a second agent on the same state directory was accepted")
	}
	for _, want := range []string{"pid " + strconv.Itoa(os.Getpid()), filepath.Join(dir, LockFile), "--state"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %q", err, want)
		}
	}
	after, err := os.ReadFile(filepath.Join(dir, StateFile))
	if err != nil || string(after) != string(before) {
		t.Errorf("the refused agent changed the state: %v\n%s\n%s", err, before, after)
	}
	if st := a.e.Status(); st.State != "up" {
		t.Errorf("the first agent is %q after the second was refused", st.State)
	}

	a.stop()
	e, err := New(Options{StateDir: dir, Clients: fakeClients(h.hub, h.bus)})
	if err != nil {
		t.Fatalf("the directory stays locked after the agent stopped: %v", err)
	}
	if e.PublicKey() != a.key() {
		t.Error("identity changed")
	}
	e.Close()
}
