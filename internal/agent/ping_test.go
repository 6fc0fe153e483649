package agent

import (
	"context"
	"errors"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"go.uber.org/zap/zaptest"

	daemonv1 "meshd/api/daemon/v1"
	"meshd/api/daemon/v1/daemonv1connect"
	"meshd/internal/daemon"
	"meshd/internal/testutil"
	"meshd/wg"
)

var _ daemon.Pinger = (*Engine)(nil)

// serveDaemon serves e's local API on a socket and returns its client.
func serveDaemon(tb testing.TB, e *Engine) daemonv1connect.DaemonServiceClient {
	tb.Helper()
	sock := filepath.Join(tb.TempDir(), "d.sock")
	ln, err := daemon.Listen(sock, 0)
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); daemon.Serve(ctx, ln, e, zaptest.NewLogger(tb)) }()
	tb.Cleanup(func() { cancel(); <-done })
	return daemon.Client(sock)
}

// pingUntil pings peer through c until ok accepts an answer, for up to d.
func pingUntil(tb testing.TB, c daemonv1connect.DaemonServiceClient, peer string, d time.Duration, ok func(*daemonv1.PingResponse) bool) *daemonv1.PingResponse {
	tb.Helper()
	deadline := time.Now().Add(d)
	var last error
	for i := 0; i < 1000 && time.Now().Before(deadline); i++ {
		resp, err := c.Ping(context.Background(), connect.NewRequest(&daemonv1.PingRequest{Peer: peer, TimeoutMs: 500}))
		if err == nil && ok(resp.Msg) {
			return resp.Msg
		}
		if err == nil {
			last = errors.New("answer on path " + resp.Msg.Path)
		} else {
			last = err
		}
	}
	tb.Fatalf("no acceptable ping answer from %s in %v: %v", peer, d, last)
	return nil
}

func TestPingReportsDirectPath(t *testing.T) {
	w := newWorld(t)
	a, b := w.agent("pinga"), w.agent("pingb")
	waitUp(t, a)
	_, ipb := waitUp(t, b)
	c := serveDaemon(t, a)

	resp := pingUntil(t, c, "pingb", 20*time.Second, func(r *daemonv1.PingResponse) bool { return r.Path == PathDirect })
	if resp.LatencyMs <= 0 || resp.OverlayIp != ipb.String() || resp.Name != "pingb" {
		t.Fatalf("answer %+v", resp)
	}
	if resp.LocalCandidate.GetAddress() == "" || resp.RemoteCandidate.GetAddress() == "" || resp.Relay != "" {
		t.Fatalf("a direct answer names its candidate pair and no relay: %+v", resp)
	}
	// By overlay IP and DNS name too.
	pingUntil(t, c, ipb.String(), 5*time.Second, func(*daemonv1.PingResponse) bool { return true })
	if dns := resp.DnsName; dns != "" {
		pingUntil(t, c, strings.TrimSuffix(dns, ".")+".", 5*time.Second, func(*daemonv1.PingResponse) bool { return true })
	}

	_, err := c.Ping(context.Background(), connect.NewRequest(&daemonv1.PingRequest{Peer: "pingx"}))
	if connect.CodeOf(err) != connect.CodeNotFound || !strings.Contains(err.Error(), "did you mean pingb?") {
		t.Fatalf("unknown peer: want NotFound naming the close match, got %v", err)
	}
	_, err = c.Ping(context.Background(), connect.NewRequest(&daemonv1.PingRequest{Peer: "zzzzzzzz"}))
	if connect.CodeOf(err) != connect.CodeNotFound || !strings.Contains(err.Error(), "peers: pingb") {
		t.Fatalf("unknown peer: want NotFound listing the peers, got %v", err)
	}
}

func TestPingReportsRelayedPathAndTimeout(t *testing.T) {
	w := newWorld(t)
	blk := &blocker{}
	blk.on.Store(true)
	a := w.agentWith("pingra", func(o *Options) {
		o.NewDevice = func(ctx context.Context, cfg wg.Config) (wg.Device, error) {
			d, err := wg.New(ctx, cfg)
			if err != nil {
				return nil, err
			}
			return &stunBlockedDevice{Device: d, b: blk}, nil
		}
	})
	b := w.agent("pingrb")
	waitUp(t, a)
	waitUp(t, b)
	c := serveDaemon(t, a)

	resp := pingUntil(t, c, "pingrb", 20*time.Second, func(r *daemonv1.PingResponse) bool { return r.Path == PathRelayed })
	if resp.LatencyMs <= 0 || resp.Relay == "" {
		t.Fatalf("a relayed answer names the relay: %+v", resp)
	}
	relay := netip.MustParseAddrPort(resp.Relay)
	if relay.Addr() != netip.MustParseAddr("127.0.0.1") {
		t.Fatalf("relay %s: want the loopback relay", relay)
	}

	// The peer goes away: the ping times out with a clear error.
	st := a.Status()
	testutil.WaitFor(t, 5*time.Second, "status lists the relay's STUN server", func() bool {
		st = a.Status()
		return len(st.StunServers) > 0
	})
	if !strings.HasPrefix(st.StunServers[0], "stun:127.0.0.1:") {
		t.Fatalf("stun servers %v", st.StunServers)
	}
	if err := b.Down(context.Background()); err != nil {
		t.Fatal(err)
	}
	_, err := c.Ping(context.Background(), connect.NewRequest(&daemonv1.PingRequest{Peer: "pingrb", TimeoutMs: 300}))
	if connect.CodeOf(err) != connect.CodeDeadlineExceeded || !strings.Contains(err.Error(), "no answer from pingrb") {
		t.Fatalf("want DeadlineExceeded, got %v", err)
	}
}
