//go:build linux

package lab

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"meshd/internal/jointoken"
	"meshd/internal/pgtest"
)

// TestReplicasOnPostgres runs the network the way docs/ha.md lays it out:
// PostgreSQL on its own host, two `meshd all` replicas on two public hosts
// sharing it, agents behind NATs joined through different replicas. It
// then takes the parts away one at a time: a policy change made through
// the other replica, replica 1 killed, the database stopped.
func TestReplicasOnPostgres(t *testing.T) {
	if testing.Short() {
		t.Skip("lab: end-to-end with the meshd binary; skipped with -short")
	}
	ctx := context.Background()
	l := New(t)
	Binary(t)

	db := l.Host("db", nil)
	pg := pgtest.Start(t, pgtest.Options{Netns: db.Namespace(), ListenAddr: db.IP().String()})
	dsn := pg.NewDatabase(t)
	l.Step("PostgreSQL started on its own host")

	r1 := NewServer(t, l.Host("r1", nil))
	r1.Args = []string{"--store", dsn}
	Must(t, r1.Start(ctx))
	r2 := NewServer(t, l.Host("r2", nil))
	r2.Args, r2.NoJoinLine = []string{"--store", dsn}, true
	Must(t, r2.Start(ctx))
	l.Step("two replicas serve one network")

	// Join tokens made through a replica name it first, then every other
	// live replica.
	joinVia := func(url, name string) string {
		var key struct {
			JoinToken string `json:"join_token"`
		}
		out, err := r1.AdminVia(ctx, url, "setup-keys", "create", "--name", name)
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(out, &key); err != nil || key.JoinToken == "" {
			t.Fatalf("setup key through %s: %v: %s", url, err, out)
		}
		return key.JoinToken
	}
	var join1, join2 string
	for i := 0; i < 50; i++ { // until replica 1 has heard of replica 2 (heartbeats, 5 s at most)
		if join1 = joinVia(r1.URL, fmt.Sprint("via-r1-", i)); strings.Contains(decodeURLs(t, join1), r2.URL) {
			break
		}
		if !Pause(ctx, 100*time.Millisecond) {
			break
		}
	}
	if got := decodeURLs(t, join1); got != r1.URL+" "+r2.URL {
		t.Fatalf("join token through replica 1 names %q, want %q", got, r1.URL+" "+r2.URL)
	}
	join2 = joinVia(r2.URL, "via-r2")
	if got := decodeURLs(t, join2); got != r2.URL+" "+r1.URL {
		t.Fatalf("join token through replica 2 names %q, want %q", got, r2.URL+" "+r1.URL)
	}

	a := NewAgent(t, l.Host("a", l.Router("ra", Home)), join1)
	// a and c are direct (home routers): their tunnel needs neither
	// replica. A relayed pair needs a relay, and loses it with its host.
	c := NewAgent(t, l.Host("c", l.Router("rc", Home)), join1)
	b := NewAgent(t, l.Host("b", l.Router("rb", Home)), join2)
	agents := []*Agent{a, b, c}
	for _, x := range agents {
		Must(t, x.Launch())
	}
	for _, x := range agents {
		Must(t, x.WaitReady(ctx))
	}
	waitPeers(ctx, t, agents, 30*time.Second)
	for x, want := range map[*Agent]*Server{a: r1, c: r1, b: r2} {
		waitControl(ctx, t, x, want.URL, 10*time.Second)
	}
	l.Step("a and c stream from replica 1, b from replica 2")

	connect(ctx, t, a, b, 30*time.Second)
	connect(ctx, t, b, c, 30*time.Second)
	connect(ctx, t, a, c, 30*time.Second)
	l.Step("tunnels between agents of different replicas")

	// A policy change through replica 2 reaches a and c, which stream from
	// replica 1, within 2 s; restoring it through replica 1 brings the
	// tunnel back.
	var pols []struct {
		ID   string `json:"id"`
		Name string `json:"name"`
	}
	out, err := r1.AdminVia(ctx, r2.URL, "policies", "list")
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(out, &pols); err != nil || len(pols) == 0 {
		t.Fatalf("policies through replica 2: %v: %s", err, out)
	}
	for _, p := range pols {
		if _, err := r1.AdminVia(ctx, r2.URL, "policies", "delete", p.ID); err != nil {
			t.Fatal(err)
		}
	}
	if d := waitNoPing(ctx, t, a.Host, c.OverlayIP(), 10*time.Second); d > 2*time.Second {
		t.Errorf("policy removed through replica 2: a → c (both on replica 1) stopped after %s, want within 2 s", d.Round(10*time.Millisecond))
	} else {
		t.Logf("policy removed through replica 2: a → c stopped after %s", d.Round(10*time.Millisecond))
	}
	if _, err := r1.Admin(ctx, "policies", "create", "--name", "all", "--source", "All", "--destination", "All", "--bidirectional"); err != nil {
		t.Fatal(err)
	}
	if d, err := a.Host.WaitPing(ctx, c.OverlayIP(), 10*time.Second); err != nil {
		t.Fatalf("policy restored through replica 1: a → c: %v", err)
	} else {
		t.Logf("policy restored through replica 1: a → c answered after %s", d.Round(10*time.Millisecond))
	}
	l.Step("a policy change through either replica reaches every agent")

	// kill -9 of replica 1: its agents' tunnels keep running, they move to
	// replica 2 within 10 s, and replica 1's join token still joins.
	r1.Kill()
	killed := time.Now()
	done := make(chan struct{})
	var got int
	var pings string
	go func() {
		defer close(done)
		got, pings = pingSeries(ctx, a.Host, c.OverlayIP(), 50) // 10 s
	}()
	for _, x := range []*Agent{a, c} {
		waitControl(ctx, t, x, r2.URL, 15*time.Second)
		if d := time.Since(killed); d > 10*time.Second {
			t.Errorf("agent %s moved to replica 2 %s after replica 1 died, want within 10 s", x.Host.Name(), d.Round(100*time.Millisecond))
		} else {
			t.Logf("agent %s on replica 2 %s after replica 1 died", x.Host.Name(), d.Round(100*time.Millisecond))
		}
	}
	<-done
	if got < 45 {
		t.Errorf("while replica 1 was dying, a → c answered %d of 50 pings:\n%s", got, pings)
	}
	d := NewAgent(t, l.Host("d", l.Router("rd", Home)), join1)
	Must(t, d.Launch())
	Must(t, d.WaitReady(ctx))
	waitControl(ctx, t, d, r2.URL, 10*time.Second)
	connect(ctx, t, d, a, 30*time.Second)
	l.Step("replica 1 killed: agents moved to replica 2; its join token still joins")

	// PostgreSQL stopped for 30 s: tunnels keep working, admin writes fail
	// with "store unavailable", and everything resumes once it is back.
	if err := pg.Stop(); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	_, err = r1.AdminVia(ctx, r2.URL, "groups", "create", "while-down")
	if err == nil || !strings.Contains(err.Error(), "store unavailable") {
		t.Errorf("admin write with the database down: %v, want a \"store unavailable\" error", err)
	}
	rest := 30*time.Second - time.Since(stopped)
	if got, out := pingSeries(ctx, a.Host, b.OverlayIP(), int(rest/(200*time.Millisecond))); got < int(rest/(200*time.Millisecond))*9/10 {
		t.Errorf("with the database down, a → b answered %d pings:\n%s", got, out)
	}
	if err := pg.Start(); err != nil {
		t.Fatal(err)
	}
	back := time.Now()
	l.Step("database down for 30 s")
	var werr error
	for i := 0; i < 300; i++ { // 30 s at most
		if _, werr = r1.AdminVia(ctx, r2.URL, "groups", "create", "after-outage"); werr == nil {
			break
		}
		if !Pause(ctx, 100*time.Millisecond) {
			break
		}
	}
	if werr != nil {
		t.Fatalf("admin write after the database came back: %v", werr)
	}
	t.Logf("admin writes work again %s after the database was back", time.Since(back).Round(100*time.Millisecond))
	// A change made now still reaches every agent: a new agent joins and
	// the others see it.
	e := NewAgent(t, l.Host("e", l.Router("re", Home)), join2)
	Must(t, e.Launch())
	Must(t, e.WaitReady(ctx))
	waitPeers(ctx, t, []*Agent{a, b, c, d, e}, 30*time.Second)
	connect(ctx, t, e, c, 30*time.Second)
	l.Step("after the outage: writes, joins and maps work without a restart")
}

// decodeURLs returns the control URLs a join token names, space-separated.
func decodeURLs(t *testing.T, token string) string {
	t.Helper()
	tok, err := jointoken.Decode(token)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Join(tok.URLs(), " ")
}

// waitControl waits until x streams from the control at url.
func waitControl(ctx context.Context, t *testing.T, x *Agent, url string, timeout time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if _, err := x.WaitStatus(ctx, "connected to "+url, func(st *Status) bool {
		return st.Self.Control.State == "connected" && strings.TrimSuffix(st.Self.Control.URL, "/") == url
	}); err != nil {
		t.Fatalf("agent %s: %v", x.Host.Name(), err)
	}
}
