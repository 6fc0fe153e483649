package agent

import (
	"errors"
	"testing"

	"meshd/internal/controlclient"
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
