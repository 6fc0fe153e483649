package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"

	"meshd/internal/controlclient"
	"meshd/internal/testutil"
	"meshd/internal/tlsconf"
)

// controlRefusal stands for controlclient's RefusedError: control's
// message, unwrapping to the client's sentinel.
type controlRefusal struct {
	msg string
	err error
}

func (e *controlRefusal) Error() string { return e.msg }
func (e *controlRefusal) Unwrap() error { return e.err }

// A refusal reads as control wrote it, which says what to do once, and
// still is one of the engine's kinds.
func TestControlErrorSaysWhatToDoOnce(t *testing.T) {
	for _, tc := range []struct {
		in    *controlRefusal
		kinds []error
	}{
		{&controlRefusal{"peer not registered (deleted by an admin): run meshd up --setup-key KEY", controlclient.ErrPeerUnknown},
			[]error{ErrNeedsLogin}},
		{&controlRefusal{"login expired: run meshd up --setup-key KEY", controlclient.ErrLoginExpired},
			[]error{ErrNeedsLogin, ErrLoginExpired}},
	} {
		err := controlError(tc.in)
		if err.Error() != tc.in.msg {
			t.Errorf("message %q, want control's %q", err, tc.in.msg)
		}
		for _, k := range append(tc.kinds, tc.in.err) {
			if !errors.Is(err, k) {
				t.Errorf("%q is not %v", err, k)
			}
		}
	}
}

// A control URL is remembered only once control answered there: a wrong
// --control (http:// against the HTTPS port, a typo) is not saved for the
// next start.
func TestControlURLSavedAfterFirstLogin(t *testing.T) {
	h := newHarness(t)
	h.hub.setDown(true)
	dir := filepath.Join(t.TempDir(), "state")
	a := h.start(dir, "SETUP", false)
	testutil.WaitFor(t, 5*time.Second, "a failed login", func() bool {
		h.hub.mu.Lock()
		defer h.hub.mu.Unlock()
		return h.hub.logins > 0
	})
	if st := readSaved(t, dir); st.ControlURL != "" {
		t.Fatalf("control URL %q saved before any login worked", st.ControlURL)
	}
	h.hub.setDown(false)
	testutil.WaitFor(t, 10*time.Second, "up", func() bool { return a.e.Status().State == "up" })
	if st := readSaved(t, dir); st.ControlURL != "fake://control" || !st.Joined {
		t.Fatalf("state after the first login: %+v", st)
	}
}

func readSaved(t *testing.T, dir string) saved {
	t.Helper()
	var st saved
	b, err := os.ReadFile(filepath.Join(dir, StateFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatal(err)
	}
	return st
}

// An error the operator must fix is explained once, then retried quietly;
// a passing one (control down) stays a warning.
func TestLoginHintOnceThenQuiet(t *testing.T) {
	pin := fmt.Errorf("unavailable: Post https://vpn:33073/x: %w", tlsconf.ErrPinMismatch)
	var l loginLog
	lvl, msg := l.failed(pin, "https://vpn:33073")
	if lvl != zapcore.ErrorLevel || !strings.Contains(msg, "meshd agent --join TOKEN") {
		t.Fatalf("first pin mismatch: %v %q", lvl, msg)
	}
	for range 3 {
		if lvl, _ := l.failed(pin, "https://vpn:33073"); lvl != zapcore.DebugLevel {
			t.Fatalf("pin mismatch again logged at %v, want debug", lvl)
		}
	}
	if lvl, _ := l.failed(errors.New("dial tcp: connection refused"), "https://vpn:33073"); lvl != zapcore.WarnLevel {
		t.Fatalf("connection refused at %v", lvl)
	}
	if h := loginHint(fmt.Errorf("unknown: %w", io.ErrUnexpectedEOF), "http://vpn:33073"); !strings.Contains(h, "use https://") {
		t.Fatalf("http:// against HTTPS: hint %q", h)
	}
	if h := loginHint(io.ErrUnexpectedEOF, "https://vpn:33073"); h != "" {
		t.Fatalf("EOF over https got hint %q", h)
	}
}
