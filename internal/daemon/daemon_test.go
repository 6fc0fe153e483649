package daemon

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"connectrpc.com/connect"
	"go.uber.org/goleak"
	"go.uber.org/zap/zaptest"

	daemonv1 "meshd/api/daemon/v1"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type fakeBackend struct {
	mu    sync.Mutex
	up    bool
	key   string
	upErr error
}

func (f *fakeBackend) Status() *daemonv1.StatusResponse {
	f.mu.Lock()
	defer f.mu.Unlock()
	state := "down"
	if f.up {
		state = "up"
	}
	return &daemonv1.StatusResponse{State: state, Self: &daemonv1.SelfStatus{Name: "alpha"}}
}

func (f *fakeBackend) Up(_ context.Context, key string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.upErr != nil {
		return f.upErr
	}
	f.up, f.key = true, key
	return nil
}

func (f *fakeBackend) Down(context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.up = false
	return nil
}

func serve(tb testing.TB, path string, b Backend) {
	tb.Helper()
	ln, err := Listen(path, 0)
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, ln, b, zaptest.NewLogger(tb)) }()
	tb.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			tb.Error(err)
		}
	})
}

func TestStatusUpDownOverTheSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "meshd.sock")
	b := &fakeBackend{}
	serve(t, path, b)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 || fi.Mode()&os.ModeSocket == 0 {
		t.Fatalf("socket mode %v, want a 0600 socket", fi.Mode())
	}
	c := Client(path)
	ctx := context.Background()
	if _, err := c.Up(ctx, connect.NewRequest(&daemonv1.UpRequest{SetupKey: "K"})); err != nil {
		t.Fatal(err)
	}
	st, err := c.Status(ctx, connect.NewRequest(&daemonv1.StatusRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	if st.Msg.State != "up" || st.Msg.Self.Name != "alpha" || b.key != "K" {
		t.Fatalf("status %v, key %q", st.Msg, b.key)
	}
	if _, err := c.Down(ctx, connect.NewRequest(&daemonv1.DownRequest{})); err != nil {
		t.Fatal(err)
	}
	st, _ = c.Status(ctx, connect.NewRequest(&daemonv1.StatusRequest{}))
	if st.Msg.State != "down" {
		t.Fatalf("state after down: %q", st.Msg.State)
	}
	b.upErr = errors.New("setup key expired: ask for a new one")
	_, err = c.Up(ctx, connect.NewRequest(&daemonv1.UpRequest{}))
	if err == nil || Explain(path, err).Error() != "setup key expired: ask for a new one" {
		t.Fatalf("up error %v, explained %v", err, Explain(path, err))
	}
	// A second daemon on the same socket is refused.
	if _, err := Listen(path, 0); !errors.Is(err, ErrInUse) {
		t.Fatalf("second listen: %v, want ErrInUse", err)
	}
}

func TestStaleSocketReplacedAndMissingAgentExplained(t *testing.T) {
	path := filepath.Join(t.TempDir(), "meshd.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close() // leaves the file behind, as a crash would
	if _, err := os.Stat(path); err != nil {
		t.Fatal(err)
	}
	_, err = Client(path).Status(context.Background(), connect.NewRequest(&daemonv1.StatusRequest{}))
	if err == nil || !strings.Contains(Explain(path, err).Error(), "is `meshd agent` running") {
		t.Fatalf("explained: %v", Explain(path, err))
	}
	ln2, err := Listen(path, 0o660)
	if err != nil {
		t.Fatal(err)
	}
	defer ln2.Close()
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o660 {
		t.Fatalf("mode %v", fi.Mode().Perm())
	}
}
