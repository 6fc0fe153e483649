package control

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/urfave/cli/v2"
	"go.uber.org/goleak"

	ctlpkg "meshd/internal/control"
)

// pgtest's shared server outlives the tests (its watchdog stops it when
// the binary exits).
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreAnyFunction("meshd/internal/pgtest.(*Server).startWatchdog.func1"))
}

// syncBuffer is a bytes.Buffer safe for a writer and a poller.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// runControl runs `meshd control ARGS` until it printed the join line, then
// stops it and returns the output.
func runControl(t *testing.T, args ...string) (string, error) {
	t.Helper()
	out := &syncBuffer{}
	app := &cli.App{Name: "meshd", Writer: out, ErrWriter: out, Commands: []*cli.Command{Command()},
		ExitErrHandler: func(*cli.Context, error) {}}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- app.RunContext(ctx, append([]string{"meshd", "control", "--log-level", "error"}, args...))
	}()
	deadline := time.After(20 * time.Second)
	for !strings.Contains(out.String(), "meshd agent --join") {
		select {
		case err := <-done:
			return out.String(), err
		case <-deadline:
			t.Fatalf("no join line:\n%s", out.String())
		case <-time.After(10 * time.Millisecond):
		}
	}
	cancel()
	return out.String(), <-done
}

// The first start prints the join line; a restart prints the same one.
func TestControlCommandPrintsJoinLine(t *testing.T) {
	dir := t.TempDir()
	args := []string{"--data", dir, "--listen", "127.0.0.1:0", "--public-url", "https://vpn.example.org:33073"}
	first, err := runControl(t, args...)
	if err != nil {
		t.Fatalf("first start: %v\n%s", err, first)
	}
	if !strings.Contains(first, "created a new network") {
		t.Fatalf("first start:\n%s", first)
	}
	second, err := runControl(t, args...)
	if err != nil {
		t.Fatalf("second start: %v\n%s", err, second)
	}
	line := func(s string) string {
		for _, l := range strings.Split(s, "\n") {
			if strings.Contains(l, "meshd agent --join") {
				return strings.TrimSpace(l)
			}
		}
		return ""
	}
	if line(first) == "" || line(first) != line(second) || strings.Contains(second, "created a new network") {
		t.Fatalf("join line changed across restart:\n%s\n%s", first, second)
	}
}

func TestControlCommandRefusesBadFlags(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		args []string
		msg  string
	}{
		{[]string{"--data", dir}, "--public-url is required"},
		{[]string{"--data", dir, "--public-url", "ftp://x"}, "--public-url"},
		{[]string{"--data", dir, "--public-url", "http://x:1"}, "--insecure"},
		{[]string{"--data", dir, "--public-url", "https://x:1", "--relay-url", "turn:x:3478"}, "--turn-secret-file"},
		{[]string{"--data", dir, "--public-url", "https://x:1", "--signal-pin", "abc"}, "--signal-pin"},
	} {
		out, err := runControl(t, c.args...)
		var ec cli.ExitCoder
		if !errors.As(err, &ec) || ec.ExitCode() != 2 || !strings.Contains(err.Error(), c.msg) {
			t.Errorf("%v: err %v, want exit 2 with %q\n%s", c.args, err, c.msg, out)
		}
	}
}

// Without a working bootstrap key the start prints the hint, not a join
// line.
func TestPrintJoinWithoutKeyPrintsHint(t *testing.T) {
	var b bytes.Buffer
	PrintJoin(&b, ctlpkg.Bootstrap{Hint: "There is no join line: the bootstrap setup key is revoked."}, "/d")
	if out := b.String(); strings.Contains(out, "meshd agent --join") || !strings.Contains(out, "is revoked") {
		t.Fatalf("output:\n%s", out)
	}
}
