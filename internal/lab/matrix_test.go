//go:build linux

package lab

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"
)

// pairRun is what the matrix saw for one pair.
type pairRun struct {
	a, b       member
	aa, ba     *Agent
	want       expect
	firstPing  time.Duration
	pingErr    error
	ab, ba2    *PeerStatus // a's view of b, b's view of a
	finalErr   error       // a ping after the paths settled
	settleTime time.Duration
}

func (r *pairRun) path() string {
	pa, pb := "?", "?"
	if r.ab != nil {
		pa = r.ab.Path
	}
	if r.ba2 != nil {
		pb = r.ba2.Path
	}
	if pa == pb {
		return pa
	}
	return pa + "/" + pb
}

func (r *pairRun) direct() bool {
	return r.ab != nil && r.ba2 != nil && r.ab.Path == "direct" && r.ba2.Path == "direct"
}

func (r *pairRun) connected() bool {
	return r.ab != nil && r.ba2 != nil && r.ab.State == "connected" && r.ba2.State == "connected"
}

func cand(p *PeerStatus) string {
	if p == nil || p.RemoteCandidate == nil {
		return "-"
	}
	return p.RemoteCandidate.Type
}

// TestMeshMatrix is the connectivity matrix: one topology with a
// host of every kind, all joined at once; every pair must ping through
// the tunnel, pairs where hole punching works (see TestNATPunch) must be
// direct, and pairs with the UDP-blocked host must be relayed. The rest is
// written down.
func TestMeshMatrix(t *testing.T) {
	ctx := context.Background()
	l := New(t)
	world := buildWorld(l)
	l.Step("build topology")
	hosts := make([]*Host, len(world))
	for i, m := range world {
		hosts[i] = m.host
	}
	_, agents := startMesh(ctx, t, l, hosts...)
	byHost := map[*Host]*Agent{}
	for _, a := range agents {
		byHost[a.Host] = a
	}

	var runs []*pairRun
	for _, p := range pairs(world) {
		runs = append(runs, &pairRun{a: p[0], b: p[1], aa: byHost[p[0].host], ba: byHost[p[1].host], want: expectation(p[0], p[1])})
	}

	// Every pair pings through the tunnel.
	var wg sync.WaitGroup
	for _, r := range runs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.firstPing, r.pingErr = r.aa.Host.WaitPing(ctx, r.ba.OverlayIP(), 60*time.Second)
		}()
	}
	wg.Wait()
	l.Step("every pair pinged")

	// Paths settle: every pair connected on both sides and the pairs that
	// should be direct are. One status per agent per round.
	settleStart := time.Now()
	deadline := settleStart.Add(30 * time.Second)
	for round := 0; round < 1000; round++ {
		views := map[*Agent]*Status{}
		for _, a := range agents {
			if st, err := a.Status(ctx); err == nil {
				views[a] = st
			}
		}
		done := true
		for _, r := range runs {
			if st := views[r.aa]; st != nil {
				r.ab = st.Peer(r.ba.OverlayIP())
			}
			if st := views[r.ba]; st != nil {
				r.ba2 = st.Peer(r.aa.OverlayIP())
			}
			settled := r.connected() && (r.want != expectDirect || r.direct())
			if settled && r.settleTime == 0 {
				r.settleTime = time.Since(settleStart)
			}
			done = done && settled
		}
		if done || time.Now().After(deadline) || !Pause(ctx, 250*time.Millisecond) {
			break
		}
	}
	l.Step("paths settled")

	for _, r := range runs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, r.finalErr = r.aa.Host.WaitPing(ctx, r.ba.OverlayIP(), 5*time.Second)
		}()
	}
	wg.Wait()
	l.Step("every pair pinged again")

	var rows [][]string
	cells := map[string]string{}
	for _, r := range runs {
		res := "ok"
		switch {
		case r.pingErr != nil || r.finalErr != nil:
			res = "FAIL: no connection"
			t.Errorf("%s ↔ %s (%s ↔ %s): no tunnel: first: %v, after settling: %v", r.a.name, r.b.name, r.a.label(), r.b.label(), r.pingErr, r.finalErr)
		case r.want == expectDirect && !r.direct():
			res = "FAIL: not direct"
			t.Errorf("%s ↔ %s (%s ↔ %s): path %s, want direct (plain UDP punching connects this pair)", r.a.name, r.b.name, r.a.label(), r.b.label(), r.path())
		case r.want == expectRelayed && r.direct():
			if r.a.nat == UDPBlocked || r.b.nat == UDPBlocked {
				res = "FAIL: direct through a UDP block"
				t.Errorf("%s ↔ %s: direct although one side's UDP is blocked: the lab leaks UDP", r.a.name, r.b.name)
			} else {
				res = "better than expected"
			}
		case r.want == expectRecord && r.direct():
			res = "direct (beats NetBird/Tailscale here?)"
		}
		rows = append(rows, []string{
			r.a.name + " ↔ " + r.b.name, r.a.label() + " ↔ " + r.b.label(), string(r.want), r.path(),
			cand(r.ab) + "/" + cand(r.ba2),
			ms(r.firstPing), ms(r.settleTime), res,
		})
		short := map[string]string{"direct": "D", "relayed": "R"}
		c := "✗"
		if r.pingErr == nil && r.finalErr == nil {
			c = "?"
			if r.ab != nil && short[r.ab.Path] != "" {
				c = short[r.ab.Path]
			}
		}
		cells[r.a.name+"/"+r.b.name] = c
		c2 := "✗"
		if r.pingErr == nil && r.finalErr == nil {
			c2 = "?"
			if r.ba2 != nil && short[r.ba2.Path] != "" {
				c2 = short[r.ba2.Path]
			}
		}
		cells[r.b.name+"/"+r.a.name] = c2
	}
	t.Logf("connectivity matrix (path from `meshd status --json` on both sides; remote candidate types; first ping; time to settle):\n%s",
		table([]string{"pair", "kinds", "design", "path", "remote cand", "1st ping", "settled", "result"}, rows))
	t.Logf("as a grid (row's view of column; D direct, R relayed, ✗ no tunnel, ? no path reported):\n%s",
		grid(world, func(a, b member) string { return cells[a.name+"/"+b.name] }))
}

func ms(d time.Duration) string {
	if d == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2fs", d.Seconds())
}
