// Package daemon serves the agent's local API (api/daemon/v1: Status, Up,
// Down) over Connect on a unix socket, and gives the CLI (`meshd status`,
// `meshd up`, `meshd down`) its client. The socket is the only way in: its
// file mode (0600 by default, 0660 to let a group use the CLI) is the access
// control. Only roles/agent imports it.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"connectrpc.com/connect"
	"go.uber.org/zap"

	daemonv1 "meshd/api/daemon/v1"
	"meshd/api/daemon/v1/daemonv1connect"
	"meshd/internal/server"
)

// Backend is what the daemon serves: the agent engine.
type Backend interface {
	Status() *daemonv1.StatusResponse
	Up(ctx context.Context, setupKey string) error
	Down(ctx context.Context) error
}

// Pinger is a Backend that can ping peers through the tunnel (`meshd
// ping`). Its errors say what went wrong in words; errors.Is tells
// fs.ErrNotExist (no such peer) and os.ErrDeadlineExceeded (no answer).
type Pinger interface {
	Ping(ctx context.Context, peer string, timeout time.Duration) (*daemonv1.PingResponse, error)
}

// ErrInUse means another process serves on the socket.
var ErrInUse = errors.New("daemon: another agent serves on this socket; pass a different --socket")

// Listen opens the unix socket at path with mode (0600 when zero). A stale
// socket file left by a crashed agent is replaced; a live one is not.
func Listen(path string, mode os.FileMode) (net.Listener, error) {
	if mode == 0 {
		mode = 0o600
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("daemon: %w", err)
	}
	if _, err := os.Lstat(path); err == nil {
		c, err := net.DialTimeout("unix", path, time.Second)
		if err == nil {
			c.Close()
			return nil, fmt.Errorf("%w (%s)", ErrInUse, path)
		}
		if !errors.Is(err, syscall.ECONNREFUSED) && !errors.Is(err, syscall.ENOENT) {
			return nil, fmt.Errorf("daemon: %s exists and is not a socket we can replace: %w", path, err)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("daemon: remove stale socket: %w", err)
		}
	}
	ln, err := listenPrivate(path)
	if err != nil {
		return nil, fmt.Errorf("daemon: listen %s: %w", path, err)
	}
	if err := os.Chmod(path, mode); err != nil {
		ln.Close()
		return nil, fmt.Errorf("daemon: chmod %s: %w", path, err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(true)
	return ln, nil
}

// Serve serves b on ln until ctx ends.
func Serve(ctx context.Context, ln net.Listener, b Backend, log *zap.Logger) error {
	srv := server.New(log, nil)
	srv.Handle(daemonv1connect.NewDaemonServiceHandler(&handler{b: b}))
	return srv.Serve(ctx, ln)
}

type handler struct{ b Backend }

var _ daemonv1connect.DaemonServiceHandler = (*handler)(nil)

func (h *handler) Status(_ context.Context, _ *connect.Request[daemonv1.StatusRequest]) (*connect.Response[daemonv1.StatusResponse], error) {
	return connect.NewResponse(h.b.Status()), nil
}

func (h *handler) Up(ctx context.Context, req *connect.Request[daemonv1.UpRequest]) (*connect.Response[daemonv1.UpResponse], error) {
	up := h.b.Up
	if req.Msg.GetSso() {
		s, ok := h.b.(interface {
			UpSSO(context.Context, bool) error
		})
		if !ok {
			return nil, connect.NewError(connect.CodeUnimplemented, errors.New("this agent cannot log in by SSO"))
		}
		up = func(ctx context.Context, _ string) error { return s.UpSSO(ctx, req.Msg.GetSsoBrowser()) }
	}
	if err := up(ctx, req.Msg.GetSetupKey()); err != nil {
		return nil, connect.NewError(connect.CodeFailedPrecondition, err)
	}
	return connect.NewResponse(&daemonv1.UpResponse{}), nil
}

func (h *handler) Down(ctx context.Context, _ *connect.Request[daemonv1.DownRequest]) (*connect.Response[daemonv1.DownResponse], error) {
	if err := h.b.Down(ctx); err != nil {
		return nil, connect.NewError(connect.CodeInternal, err)
	}
	return connect.NewResponse(&daemonv1.DownResponse{}), nil
}

func (h *handler) Ping(ctx context.Context, req *connect.Request[daemonv1.PingRequest]) (*connect.Response[daemonv1.PingResponse], error) {
	p, ok := h.b.(Pinger)
	if !ok {
		return nil, connect.NewError(connect.CodeUnimplemented, errors.New("this agent cannot ping"))
	}
	const maxTimeout = time.Minute
	timeout := time.Duration(req.Msg.GetTimeoutMs()) * time.Millisecond
	if timeout < 0 || timeout > maxTimeout {
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("timeout must be between 0 and %v", maxTimeout))
	}
	resp, err := p.Ping(ctx, req.Msg.GetPeer(), timeout)
	switch {
	case err == nil:
		return connect.NewResponse(resp), nil
	case errors.Is(err, fs.ErrNotExist):
		return nil, connect.NewError(connect.CodeNotFound, err)
	case errors.Is(err, os.ErrDeadlineExceeded):
		return nil, connect.NewError(connect.CodeDeadlineExceeded, err)
	default:
		return nil, connect.NewError(connect.CodeFailedPrecondition, err)
	}
}

// Client returns a client of the daemon on the unix socket at path.
func Client(path string) daemonv1connect.DaemonServiceClient {
	protocols := new(http.Protocols)
	protocols.SetUnencryptedHTTP2(true)
	t := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
		Protocols: protocols,
	}
	return daemonv1connect.NewDaemonServiceClient(&http.Client{Transport: t}, "http://meshd")
}

// Explain turns a client error into a message for the CLI user.
func Explain(path string, err error) error {
	var ne *net.OpError
	if errors.As(err, &ne) || errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) {
		if errors.Is(err, syscall.EACCES) {
			return fmt.Errorf("cannot open %s: permission denied (run as root, or as a member of the socket's group)", path)
		}
		return fmt.Errorf("no agent answers on %s: is `meshd agent` running (with this --socket)?", path)
	}
	if ce := new(connect.Error); errors.As(err, &ce) {
		return errors.New(ce.Message())
	}
	return err
}
