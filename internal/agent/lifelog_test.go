package agent

import (
	"context"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"meshd/internal/testutil"
)

// TestLogSaysJoinedDownAndUp: the log says "joined as NAME IP" on login,
// and `meshd down` and `meshd up` each leave a line.
func TestLogSaysJoinedDownAndUp(t *testing.T) {
	h := newHarness(t)
	core, logs := observer.New(zapcore.InfoLevel)
	h.core = core
	a := h.start("", "SETUP", false)
	testutil.WaitFor(t, 5*time.Second, "up", func() bool { return a.e.Status().State == "up" })
	st := a.e.Status()
	joined := "joined as " + st.Self.Name + " " + st.Self.OverlayIp
	if logs.FilterMessage(joined).Len() != 1 {
		t.Errorf("no %q line: %v", joined, messages(logs))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := a.e.Down(ctx); err != nil {
		t.Fatal(err)
	}
	if logs.FilterMessageSnippet("meshd down: ").Len() != 1 || logs.FilterMessage("tunnel down").Len() != 1 {
		t.Errorf("down left no line: %v", messages(logs))
	}
	if err := a.e.Up(ctx, ""); err != nil {
		t.Fatal(err)
	}
	if logs.FilterMessageSnippet("meshd up: ").Len() != 1 || logs.FilterMessage(joined).Len() != 2 {
		t.Errorf("up left no line: %v", messages(logs))
	}
}

func messages(logs *observer.ObservedLogs) string {
	var b strings.Builder
	for _, e := range logs.All() {
		b.WriteString(e.Message + "\n")
	}
	return b.String()
}
