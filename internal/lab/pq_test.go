//go:build linux

package lab

import (
	"context"
	"regexp"
	"strconv"
	"testing"
	"time"
)

// TestMeshPostQuantumRotationUnderPing: two agents behind home routers in
// permissive post-quantum mode rotate their pre-shared key every 6 s (a
// hidden flag; 2 min by default) while a pings b every 50 ms for 25 s: at
// least three rotations, not one echo lost.
func TestMeshPostQuantumRotationUnderPing(t *testing.T) {
	if testing.Short() {
		t.Skip("lab: end-to-end with the meshd binary; skipped with -short")
	}
	ctx := context.Background()
	l := New(t)
	a := l.Host("a", l.Router("ra", Home))
	b := l.Host("b", l.Router("rb", Home))
	Binary(t)
	srv := StartServer(ctx, t, l.Host("srv", nil))
	if _, err := srv.Admin(ctx, "account", "update", "--post-quantum", "permissive"); err != nil {
		t.Fatal(err)
	}
	var ag []*Agent
	for _, h := range []*Host{a, b} {
		x := NewAgent(t, h, srv.Join)
		x.Args = []string{"--post-quantum-rotate", "6s"}
		Must(t, x.Launch())
		ag = append(ag, x)
	}
	for _, x := range ag {
		Must(t, x.WaitReady(ctx))
	}
	waitPeers(ctx, t, ag, 30*time.Second)
	connect(ctx, t, ag[0], ag[1], 30*time.Second)
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	st, err := ag[0].WaitStatus(wctx, "a post-quantum key with b", func(st *Status) bool {
		p := st.Peer(ag[1].OverlayIP())
		return p != nil && p.PostQuantum
	})
	Must(t, err)
	first := st.Peer(ag[1].OverlayIP()).PostQuantumRotated
	l.Step("a ↔ b with a post-quantum key")

	// 500 echoes, 50 ms apart; each may take a second.
	out, err := a.Run(ctx, "ping", "-n", "-q", "-c", "500", "-i", "0.05", "-W", "1", ag[1].OverlayIP().String())
	if err != nil {
		t.Fatalf("ping: %v\n%s", err, out)
	}
	m := regexp.MustCompile(`(\d+) packets transmitted, (\d+) received`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("ping said:\n%s", out)
	}
	sent, got := atoi(m[1]), atoi(m[2])
	st, err = ag[0].Status(ctx)
	Must(t, err)
	p := st.Peer(ag[1].OverlayIP())
	last, _ := time.Parse(time.RFC3339, p.PostQuantumRotated)
	firstT, _ := time.Parse(time.RFC3339, first)
	rotations := int(last.Sub(firstT) / (6 * time.Second))
	l.Step("ping through rotations")
	t.Logf("%d of %d echoes answered; key rotated at %s, then at %s (about %d rotations)", got, sent, first, p.PostQuantumRotated, rotations)
	if !p.PostQuantum || rotations < 3 {
		t.Fatalf("rotations: first %s, last %s; post_quantum %v", first, p.PostQuantumRotated, p.PostQuantum)
	}
	if got != sent {
		t.Fatalf("%d of %d echoes lost across the rotations", sent-got, sent)
	}
}

func atoi(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}
