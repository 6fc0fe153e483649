package daemon

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	"connectrpc.com/connect"

	daemonv1 "meshd/api/daemon/v1"
)

// pingBackend answers pings by peer name: "ok" answers, "gone" times out,
// anything else is unknown.
type pingBackend struct {
	fakeBackend
	timeout time.Duration
}

func (p *pingBackend) Ping(_ context.Context, peer string, timeout time.Duration) (*daemonv1.PingResponse, error) {
	p.timeout = timeout
	switch peer {
	case "ok":
		return &daemonv1.PingResponse{Name: "ok", Path: "direct", LatencyMs: 1}, nil
	case "gone":
		return nil, fmt.Errorf("no answer: %w", os.ErrDeadlineExceeded)
	}
	return nil, fmt.Errorf("no peer %q: %w", peer, fs.ErrNotExist)
}

func TestPingCodes(t *testing.T) {
	path := filepath.Join(t.TempDir(), "meshd.sock")
	b := &pingBackend{}
	serve(t, path, b)
	c := Client(path)
	ctx := context.Background()
	resp, err := c.Ping(ctx, connect.NewRequest(&daemonv1.PingRequest{Peer: "ok", TimeoutMs: 1500}))
	if err != nil || resp.Msg.GetPath() != "direct" || b.timeout != 1500*time.Millisecond {
		t.Fatalf("ok: %v %v (timeout %v)", resp, err, b.timeout)
	}
	for peer, code := range map[string]connect.Code{"gone": connect.CodeDeadlineExceeded, "nobody": connect.CodeNotFound} {
		_, err := c.Ping(ctx, connect.NewRequest(&daemonv1.PingRequest{Peer: peer}))
		if connect.CodeOf(err) != code {
			t.Errorf("%s: want %v, got %v", peer, code, err)
		}
	}
	_, err = c.Ping(ctx, connect.NewRequest(&daemonv1.PingRequest{Peer: "ok", TimeoutMs: int64(time.Hour / time.Millisecond)}))
	if connect.CodeOf(err) != connect.CodeInvalidArgument {
		t.Errorf("an hour's timeout: want InvalidArgument, got %v", err)
	}

	// A backend that cannot ping says so.
	path2 := filepath.Join(t.TempDir(), "meshd2.sock")
	serve(t, path2, &fakeBackend{})
	_, err = Client(path2).Ping(ctx, connect.NewRequest(&daemonv1.PingRequest{Peer: "ok"}))
	if connect.CodeOf(err) != connect.CodeUnimplemented || errors.Is(err, fs.ErrNotExist) {
		t.Errorf("no pinger: got %v", err)
	}
}
