package agent

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/urfave/cli/v2"
	"go.uber.org/zap/zaptest"

	daemonv1 "meshd/api/daemon/v1"
	"meshd/internal/daemon"
)

// ssoBackend waits in UpSSO until the test approves, showing a login.
type ssoBackend struct {
	mu       sync.Mutex
	waiting  bool
	approved chan struct{}
}

func (b *ssoBackend) Status() *daemonv1.StatusResponse {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := &daemonv1.StatusResponse{State: "connecting", Self: &daemonv1.SelfStatus{}}
	if b.waiting {
		s.Self.Login = &daemonv1.SSOLogin{Url: "https://idp.example.org/device", Code: "BCDF-GHJK"}
	}
	return s
}

func (b *ssoBackend) Up(context.Context, string) error { return nil }
func (b *ssoBackend) Down(context.Context) error       { return nil }

func (b *ssoBackend) UpSSO(ctx context.Context, browser bool) error {
	b.mu.Lock()
	b.waiting = true
	b.mu.Unlock()
	select {
	case <-b.approved:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// `meshd up --sso` shows where to approve while the agent waits, then "up".
func TestUpSSOShowsTheLogin(t *testing.T) {
	path := filepath.Join(t.TempDir(), "meshd.sock")
	ln, err := daemon.Listen(path, 0)
	if err != nil {
		t.Fatal(err)
	}
	b := &ssoBackend{approved: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- daemon.Serve(ctx, ln, b, zaptest.NewLogger(t)) }()
	defer func() { cancel(); <-served }()

	out := &lockedBuffer{}
	app := &cli.App{Name: "meshd", Writer: out, ErrWriter: out, Commands: []*cli.Command{UpCommand()}, ExitErrHandler: func(*cli.Context, error) {}}
	done := make(chan error, 1)
	go func() { done <- app.Run([]string{"meshd", "up", "--sso", "--socket", path}) }()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(out.String(), "open https://idp.example.org/device and enter BCDF-GHJK") {
		if time.Now().After(deadline) {
			t.Fatalf("no login shown:\n%s", out.String())
		}
		time.Sleep(10 * time.Millisecond) // polling the command's output, bounded by the deadline
	}
	close(b.approved)
	if err := <-done; err != nil || !strings.HasSuffix(out.String(), "up\n") {
		t.Fatalf("meshd up --sso: %v\n%s", err, out.String())
	}
	if strings.Count(out.String(), "enter BCDF-GHJK") != 1 {
		t.Fatalf("the login was shown more than once:\n%s", out.String())
	}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
