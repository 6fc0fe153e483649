//go:build linux

package lab

import (
	"bytes"
	"context"
	"encoding/base64"
	"strings"
	"testing"
	"time"
)

// TestMeshUDPDroppedFallsBackToTCP: two agents connected over UDP, then
// one side's router starts dropping all UDP (a firewall change under a
// running agent). The pair must come back over TURN/TCP or TLS within a
// bound, not stay "connecting" because the agent once saw UDP work.
func TestMeshUDPDroppedFallsBackToTCP(t *testing.T) {
	ctx := context.Background()
	l := New(t)
	ra := l.Router("ra", Home)
	a := l.Host("a", ra)
	b := l.Host("b", l.Router("rb", Home))
	_, ag := startMesh(ctx, t, l, a, b)
	connect(ctx, t, ag[0], ag[1], 30*time.Second)
	waitPath(ctx, t, ag[0], ag[1], "direct", 20*time.Second)
	// A relayed pair whose relay ran over UDP once: the relay's STUN port
	// answered, so only TURN/UDP was tried afterwards.
	l.Step("a ↔ b direct over UDP")

	// Drop every forwarded UDP packet, established flows too (the
	// UDPBlocked kind lets established ones through).
	if out, err := ra.Run(ctx, "nft", "insert", "rule", "ip", "mlab", "forward", "meta", "l4proto", "udp", "drop"); err != nil {
		t.Fatalf("nft: %v\n%s", err, out)
	}
	start := time.Now()
	const bound = 20 * time.Second
	back := connect(ctx, t, ag[0], ag[1], bound)
	l.Step("UDP dropped at a's router: ping back")
	p, err := peerOf(ctx, ag[0], ag[1])
	if err != nil || p == nil {
		t.Fatalf("a's view of b: %v %v", p, err)
	}
	waitPath(ctx, t, ag[0], ag[1], "relayed", bound)
	t.Logf("UDP dropped at a's router: ping through the tunnel again after %.2fs, relayed path in status after %.2fs (local %v)",
		back.Seconds(), time.Since(start).Seconds(), p.LocalCandidate)
}

// controlled returns the agent of the pair with the smaller public key:
// the side that waits for the other's first WireGuard handshake.
func controlled(ctx context.Context, t *testing.T, x, y *Agent) (small, large *Agent) {
	t.Helper()
	key := func(a *Agent) []byte {
		st, err := a.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		k, err := base64.StdEncoding.DecodeString(st.Self.PublicKey)
		if err != nil {
			t.Fatalf("public key %q: %v", st.Self.PublicKey, err)
		}
		return k
	}
	if bytes.Compare(key(x), key(y)) < 0 {
		return x, y
	}
	return y, x
}

// firstPing pings peer from a every 50 ms and returns how long after
// since the first echo came back and how long after a's log said the path
// to peer was set.
func firstPing(ctx context.Context, t *testing.T, a, peer *Agent, since time.Time, timeout time.Duration) (total, afterPath time.Duration) {
	t.Helper()
	if _, err := a.Host.WaitPing(ctx, peer.OverlayIP(), timeout); err != nil {
		t.Fatal(err)
	}
	at := time.Now()
	var pathAt time.Time
	for _, line := range strings.Split(a.Proc.Output(), "\n") {
		if !strings.Contains(line, "\tpath direct\t") && !strings.Contains(line, "\tpath relayed\t") {
			continue
		}
		ts, err := time.Parse("2006-01-02T15:04:05.000Z0700", strings.SplitN(line, "\t", 2)[0])
		if err == nil && !ts.Before(since.Truncate(time.Millisecond)) {
			pathAt = ts
			break
		}
	}
	if pathAt.IsZero() {
		t.Fatalf("no \"path direct\" or \"path relayed\" line in a's log since %v:\n%s", since, a.Proc.Output())
	}
	return at.Sub(since), at.Sub(pathAt)
}

// TestMeshRestartFirstPing: after an agent restart, and after `meshd down`
// and `meshd up`, the first packet through the tunnel must not wait for a
// handshake timer once the path is chosen. The side restarted is the one
// that waits for the other's handshake on a first join (the smaller key):
// the other side still holds the old session.
func TestMeshRestartFirstPing(t *testing.T) {
	ctx := context.Background()
	l := New(t)
	a := l.Host("a", l.Router("ra", Home))
	b := l.Host("b", l.Router("rb", Home))
	_, ag := startMesh(ctx, t, l, a, b)
	connect(ctx, t, ag[0], ag[1], 30*time.Second)
	connect(ctx, t, ag[1], ag[0], 10*time.Second)
	waitPath(ctx, t, ag[0], ag[1], "direct", 20*time.Second)
	small, large := controlled(ctx, t, ag[0], ag[1])
	l.Step("a ↔ b direct")

	const bound = 600 * time.Millisecond // path to first echo; about a round trip and ping's interval
	small.Proc.Stop()
	start := time.Now()
	if err := small.Launch(); err != nil {
		t.Fatal(err)
	}
	total, afterPath := firstPing(ctx, t, small, large, start, 30*time.Second)
	l.Step("restarted: first ping")
	t.Logf("agent restart: first echo %.2fs after the start, %.2fs after the path was set", total.Seconds(), afterPath.Seconds())
	if afterPath > bound {
		t.Errorf("agent restart: first echo %.2fs after the path was set, want < %v", afterPath.Seconds(), bound)
	}

	bin := Binary(t)
	if out, err := small.Host.Run(ctx, bin, "down", "--socket", small.Socket); err != nil {
		t.Fatalf("meshd down: %v\n%s", err, out)
	}
	start = time.Now()
	if out, err := small.Host.Run(ctx, bin, "up", "--socket", small.Socket); err != nil {
		t.Fatalf("meshd up: %v\n%s", err, out)
	}
	total, afterPath = firstPing(ctx, t, small, large, start, 30*time.Second)
	l.Step("down, up: first ping")
	t.Logf("meshd down && meshd up: first echo %.2fs after up, %.2fs after the path was set", total.Seconds(), afterPath.Seconds())
	if afterPath > bound {
		t.Errorf("down/up: first echo %.2fs after the path was set, want < %v", afterPath.Seconds(), bound)
	}
}
