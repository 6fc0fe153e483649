//go:build linux

package lab

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestMeshSpuriousNetworkChange gives a host an address that has nothing
// to do with its path to a peer (a veth pair, as a container or a VPN
// interface coming up makes): the agent notices a network change and
// looks for new paths, but the working direct path stays direct, with the
// same endpoint, on both sides, and pings keep being answered.
//
// Before the fix every change of address made the path machine demand a
// fresh WireGuard handshake 20 s after the direct path came back, which
// WireGuard has no reason to make before its two-minute rekey: the
// handshake watchdog declared the working path dead and the peer went
// through the relay for a second every 20 s. The window watched here
// (24 s after the change was noticed) covers the first of those.
func TestMeshSpuriousNetworkChange(t *testing.T) {
	ctx := context.Background()
	l := New(t)
	a := l.Host("a", l.Router("ra", Home))
	b := l.Host("b", l.Router("rb", Home))
	_, ag := startMesh(ctx, t, l, a, b)
	connect(ctx, t, ag[0], ag[1], 30*time.Second)
	waitPath(ctx, t, ag[0], ag[1], "direct", 30*time.Second)
	waitPath(ctx, t, ag[1], ag[0], "direct", 10*time.Second)
	l.Step("a ↔ b direct")

	pairOf := func(x, y *Agent) string {
		p, err := peerOf(ctx, x, y)
		if err != nil || p == nil {
			t.Fatalf("%s's view of %s: %v %v", x.Host.Name(), y.Host.Name(), p, err)
		}
		if p.RemoteCandidate == nil {
			return p.Path
		}
		return p.Path + " to " + p.RemoteCandidate.Address // the WireGuard endpoint
	}
	beforeA, beforeB := pairOf(ag[0], ag[1]), pairOf(ag[1], ag[0])

	// A new address in a's namespace on a veth pair of its own (no dummy
	// module here); the namespace, and the pair with it, goes in the lab's
	// cleanup.
	if _, err := a.Run(ctx, "sh", "-c",
		"ip link add spur0 type veth peer name spur1 && ip addr add 10.9.9.1/24 dev spur0 && ip link set spur0 up && ip link set spur1 up"); err != nil {
		t.Fatalf("add an address on a: %v", err)
	}
	wctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	_, err := ag[0].Proc.WaitOutput(wctx, regexp.MustCompile(`network changed`))
	cancel()
	if err != nil {
		t.Fatalf("a's agent did not notice the new address: %v\n%s", err, tail(ag[0].Proc.Output(), 20))
	}
	l.Step("a noticed the new address")
	logA, logB := len(ag[0].Proc.Output()), len(ag[1].Proc.Output())

	// Watch both sides' status and ping through the tunnel meanwhile.
	const watch = 24 * time.Second
	type pingRes struct {
		got int
		out string
	}
	pings := make(chan pingRes, 1)
	go func() {
		got, out := pingSeries(ctx, a, ag[1].OverlayIP(), int(watch/(200*time.Millisecond)))
		pings <- pingRes{got, out}
	}()
	var bad []string
	start := time.Now()
	deadline := start.Add(watch)
	for i := 0; i < 10000 && time.Now().Before(deadline); i++ {
		for _, v := range [][2]*Agent{{ag[0], ag[1]}, {ag[1], ag[0]}} {
			p, err := peerOf(ctx, v[0], v[1])
			switch {
			case err != nil:
				t.Fatal(err)
			case p == nil || p.State != "connected" || p.Path != "direct":
				bad = append(bad, fmt.Sprintf("%s at +%.1fs: %s", v[0].Host.Name(), time.Since(start).Seconds(), describe(p)))
			}
		}
		if !Pause(ctx, 250*time.Millisecond) {
			break
		}
	}
	pr := <-pings
	l.Step(fmt.Sprintf("watched %v", watch))

	if len(bad) > 0 {
		t.Errorf("the direct path left direct after a spurious network change (%d samples):\n%s", len(bad), strings.Join(bad[:min(len(bad), 10)], "\n"))
	}
	for _, x := range []struct {
		ag   *Agent
		from int
	}{{ag[0], logA}, {ag[1], logB}} {
		if out := x.ag.Proc.Output()[x.from:]; strings.Contains(out, "path relayed") {
			t.Errorf("%s switched to the relay after the change:\n%s", x.ag.Host.Name(), grepLines(out, "path "))
		}
	}
	if afterA, afterB := pairOf(ag[0], ag[1]), pairOf(ag[1], ag[0]); afterA != beforeA || afterB != beforeB {
		t.Errorf("the path changed: a %s → %s, b %s → %s", beforeA, afterA, beforeB, afterB)
	}
	if want := int(watch/(200*time.Millisecond)) - 2; pr.got < want {
		t.Errorf("a → b answered %d pings, want at least %d:\n%s", pr.got, want, pr.out)
	}
	t.Logf("%d pings answered while watching; a's log after the change:\n%s", pr.got, grepLines(ag[0].Proc.Output()[logA:], "path "))
}

// describe is a peer's state, path and endpoint.
func describe(p *PeerStatus) string {
	if p == nil {
		return "not listed"
	}
	s := p.State + " " + p.Path
	if p.LocalCandidate != nil && p.RemoteCandidate != nil {
		s += fmt.Sprintf(" %s %s -> %s %s", p.LocalCandidate.Type, p.LocalCandidate.Address, p.RemoteCandidate.Type, p.RemoteCandidate.Address)
	}
	return s
}

// grepLines returns the lines of s that contain sub.
func grepLines(s, sub string) string {
	var out []string
	for _, line := range strings.Split(s, "\n") {
		if strings.Contains(line, sub) {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}
