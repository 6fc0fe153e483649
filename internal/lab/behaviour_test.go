//go:build linux

package lab

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// The behaviour scenarios, and iperf3 through the tunnel
// (item 4). Each builds a small topology of its own.

// policy is the part of `meshd admin policies list --json` the lab uses.
type policy struct {
	ID           string   `json:"id"`
	Name         string   `json:"name"`
	Sources      []string `json:"sources"`
	Destinations []string `json:"destinations"`
}

// TestMeshPolicy deletes the policy that connects two peers (the default
// All → All): their tunnel is cut within 5 s; re-adding it restores it.
func TestMeshPolicy(t *testing.T) {
	ctx := context.Background()
	l := New(t)
	a := l.Host("a", l.Router("ra", Home))
	b := l.Host("b", l.Router("rb", Home))
	srv, ag := startMesh(ctx, t, l, a, b)
	connect(ctx, t, ag[0], ag[1], 30*time.Second)
	l.Step("a pings b")

	var ps []policy
	Must(t, srv.AdminJSON(ctx, &ps, "policies", "list"))
	if len(ps) == 0 {
		t.Fatal("a new account has no policy; want the default All → All")
	}
	for _, p := range ps {
		if _, err := srv.Admin(ctx, "policies", "delete", p.ID); err != nil {
			t.Fatal(err)
		}
	}
	cut := waitNoPing(ctx, t, a, ag[1].OverlayIP(), 5*time.Second)
	if err := a.Ping(ctx, ag[1].OverlayIP()); err == nil {
		t.Fatalf("a reaches b again with no policy")
	}
	l.Step("policy deleted: tunnel cut")
	t.Logf("tunnel cut %.2fs after the policy was deleted", cut.Seconds())

	var p policy
	if err := srv.AdminJSON(ctx, &p, "policies", "create",
		"--name", "lab-all", "--source", "All", "--destination", "All", "--bidirectional"); err != nil {
		t.Fatal(err)
	}
	back := connect(ctx, t, ag[0], ag[1], 30*time.Second)
	connect(ctx, t, ag[1], ag[0], 5*time.Second)
	l.Step("policy re-added: tunnel back")
	t.Logf("tunnel back %.2fs after the policy was re-added", back.Seconds())
}

// TestMeshPeerDelete deletes a peer: it disappears from every other peer's
// status and its tunnels go.
func TestMeshPeerDelete(t *testing.T) {
	ctx := context.Background()
	l := New(t)
	a := l.Host("a", nil)
	b := l.Host("b", l.Router("rb", Home))
	c := l.Host("c", l.Router("rc", Home))
	srv, ag := startMesh(ctx, t, l, a, b, c)
	connect(ctx, t, ag[0], ag[2], 30*time.Second)
	connect(ctx, t, ag[1], ag[2], 30*time.Second)
	l.Step("a and b ping c")

	self, err := ag[2].Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	_, err = srv.Admin(ctx, "peers", "delete", self.Self.Name)
	Must(t, err)
	for _, x := range ag[:2] {
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_, err := x.WaitStatus(wctx, "c gone", func(st *Status) bool { return st.Peer(ag[2].OverlayIP()) == nil })
		cancel()
		if err != nil {
			t.Error(err)
		}
	}
	l.Step("c gone from a and b")
	if err := a.Ping(ctx, ag[2].OverlayIP()); err == nil {
		t.Errorf("a still reaches the deleted peer c")
	}
	connect(ctx, t, ag[0], ag[1], 10*time.Second) // the others are untouched
	exited, _ := ag[2].Proc.Exited()
	t.Logf("the deleted agent: exited=%v, last output:\n%s", exited, tail(ag[2].Proc.Output(), 5))
}

// TestMeshControlOutage kills `meshd all`: the tunnels keep working;
// after a restart the agents resync and a new peer reaches both.
func TestMeshControlOutage(t *testing.T) {
	ctx := context.Background()
	l := New(t)
	a := l.Host("a", l.Router("ra", Home))
	b := l.Host("b", l.Router("rb", Home))
	srv, ag := startMesh(ctx, t, l, a, b)
	connect(ctx, t, ag[0], ag[1], 30*time.Second)
	l.Step("a pings b")

	srv.Kill()
	wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	_, err := ag[0].WaitStatus(wctx, "control down", func(st *Status) bool { return st.Self.Control.State != "connected" })
	cancel()
	if err != nil {
		t.Errorf("the agent did not notice that control is gone: %v", err)
	}
	l.Step("meshd all killed")
	if got, out := pingSeries(ctx, a, ag[1].OverlayIP(), 15); got < 14 {
		t.Errorf("with control down, a → b answered %d of 15 pings:\n%s", got, out)
	}
	l.Step("tunnel works without control")

	if err := srv.Start(ctx); err != nil {
		t.Fatalf("restart meshd all: %v", err)
	}
	for _, x := range ag {
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		_, err := x.WaitStatus(wctx, "control connected", func(st *Status) bool { return st.Self.Control.State == "connected" })
		cancel()
		if err != nil {
			t.Error(err)
		}
	}
	l.Step("agents back on control")
	c := l.Host("c", l.Router("rc", Home))
	agc := StartAgents(ctx, t, srv.Join, c)[0]
	all := append(ag, agc)
	waitPeers(ctx, t, all, 30*time.Second)
	connect(ctx, t, ag[0], agc, 30*time.Second)
	connect(ctx, t, ag[1], agc, 30*time.Second)
	connect(ctx, t, ag[0], ag[1], 5*time.Second)
	l.Step("new peer c reaches a and b")
}

// TestMeshRoaming moves a host to another router, then to another address
// on that router: its tunnel to a peer behind a home router comes back,
// direct.
func TestMeshRoaming(t *testing.T) {
	ctx := context.Background()
	l := New(t)
	r1, r2 := l.Router("r1", Home), l.Router("r2", Home)
	a := l.Host("a", r1)
	b := l.Host("b", l.Router("rb", Home))
	_, ag := startMesh(ctx, t, l, a, b)
	connect(ctx, t, ag[0], ag[1], 30*time.Second)
	waitPath(ctx, t, ag[0], ag[1], "direct", 30*time.Second)
	l.Step("a ↔ b direct")

	for _, move := range []struct {
		name string
		to   *Router
	}{{"to another router", r2}, {"to another address on it", r2}} {
		old := a.IP()
		if err := a.Move(move.to); err != nil {
			t.Fatal(err)
		}
		back := connect(ctx, t, ag[0], ag[1], 45*time.Second)
		connect(ctx, t, ag[1], ag[0], 10*time.Second)
		direct := waitPath(ctx, t, ag[1], ag[0], "direct", 45*time.Second)
		waitPath(ctx, t, ag[0], ag[1], "direct", 10*time.Second)
		l.Step("roamed " + move.name)
		t.Logf("a moved %s (%v → %v, public %v): ping back after %.2fs, direct after %.2fs more",
			move.name, old, a.IP(), a.PublicIP(), back.Seconds(), direct.Seconds())
	}
}

// TestMeshRelayUpgrade starts a pair relayed because one side's router
// drops UDP, then lifts the block: the pair goes direct.
func TestMeshRelayUpgrade(t *testing.T) {
	ctx := context.Background()
	l := New(t)
	ru := l.Router("ru", UDPBlocked)
	a := l.Host("a", ru)
	b := l.Host("b", l.Router("rb", Home))
	_, ag := startMesh(ctx, t, l, a, b)
	connect(ctx, t, ag[0], ag[1], 30*time.Second)
	waitPath(ctx, t, ag[0], ag[1], "relayed", 10*time.Second)
	l.Step("a ↔ b relayed")

	if err := ru.SetKind(Home); err != nil {
		t.Fatal(err)
	}
	up := waitPath(ctx, t, ag[0], ag[1], "direct", 60*time.Second)
	waitPath(ctx, t, ag[1], ag[0], "direct", 10*time.Second)
	connect(ctx, t, ag[0], ag[1], 5*time.Second)
	l.Step("UDP allowed: direct")
	t.Logf("direct %.2fs after UDP was allowed", up.Seconds())
}

// TestMeshIperf runs iperf3 through the tunnel (the figures belong to the
// benchmarks; this checks that bulk TCP works and is counted by the agent).
func TestMeshIperf(t *testing.T) {
	ctx := context.Background()
	l := New(t)
	a := l.Host("a", l.Router("ra", Home))
	b := l.Host("b", nil)
	_, ag := startMesh(ctx, t, l, a, b)
	connect(ctx, t, ag[0], ag[1], 30*time.Second)
	l.Step("a pings b")

	before, err := peerOf(ctx, ag[1], ag[0])
	if err != nil || before == nil {
		t.Fatalf("b's view of a: %v %v", before, err)
	}
	srv, err := b.Start("iperf3-server", "iperf3", "-s", "-1", "-B", ag[1].OverlayIP().String())
	if err != nil {
		t.Fatal(err)
	}
	type iperfResult struct {
		Error string `json:"error"`
		End   struct {
			SumReceived struct {
				Bytes         int64   `json:"bytes"`
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
	}
	var res iperfResult
	var out string
	for try := 0; try < 50; try++ { // the server needs a moment to listen
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		out, err = a.Run(wctx, "iperf3", "-c", ag[1].OverlayIP().String(), "-t", "3", "-J")
		cancel()
		res = iperfResult{}
		if jerr := json.Unmarshal([]byte(out), &res); jerr != nil {
			t.Fatalf("iperf3 JSON: %v (%v)\n%s", jerr, err, out)
		}
		if !strings.Contains(res.Error, "Connection refused") || !Pause(ctx, 100*time.Millisecond) {
			break
		}
	}
	if err != nil || res.Error != "" {
		t.Fatalf("iperf3 through the tunnel: %v %s\nserver:\n%s", err, res.Error, srv.Output())
	}
	got := res.End.SumReceived
	if got.Bytes == 0 {
		t.Fatalf("iperf3 moved no data:\n%s", out)
	}
	l.Step("iperf3 3 s")
	t.Logf("iperf3 a → b through the tunnel: %.0f Mb/s (%d bytes)", got.BitsPerSecond/1e6, got.Bytes)

	// The agent may sample its counters now and then: poll.
	wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_, err = ag[1].WaitStatus(wctx, "rx_bytes from a covering iperf3's bytes", func(st *Status) bool {
		p := st.Peer(ag[0].OverlayIP())
		return p != nil && int64(p.RxBytes-before.RxBytes) >= got.Bytes
	})
	if err != nil {
		t.Error(err)
	}
}
