// Package clustertest is the conformance suite of cluster.Cluster: every
// implementation (the in-process Group, PostgreSQL's) runs the same tests,
// so that code written and tested against one behaves the same on the
// other. Only tests import it.
package clustertest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"meshd/internal/cluster"
)

// Pair is two replicas of one fresh cluster.
type Pair struct {
	A, B cluster.Cluster
	// Cut breaks every replica's link to the shared state for a moment
	// (PostgreSQL: terminate their connections) so that messages may be
	// lost; nil when an implementation cannot lose messages that way.
	Cut func(tb testing.TB)
}

// Run runs the suite; newPair makes two replicas of a fresh, empty
// cluster for each test and arranges their cleanup.
func Run(t *testing.T, newPair func(t *testing.T) Pair) {
	tests := []struct {
		name string
		fn   func(t *testing.T, p Pair)
	}{
		{"PublishSubscribe", testPublishSubscribe},
		{"OrderPerPublisher", testOrderPerPublisher},
		{"Payloads", testPayloads},
		{"SlowSubscriber", testSlowSubscriber},
		{"SubscribeEnds", testSubscribeEnds},
		{"NilAfterLoss", testNilAfterLoss},
		{"Heartbeat", testHeartbeat},
		{"ForgetDeadReplica", testForgetDeadReplica},
		{"LeadExclusive", testLeadExclusive},
		{"LeadTakeover", testLeadTakeover},
		{"Presence", testPresence},
		{"TakeOnce", testTakeOnce},
		{"Close", testClose},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, newPair(t)) })
	}
}

const wait = 10 * time.Second

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 2*wait)
	t.Cleanup(cancel)
	return c
}

func subscribe(t *testing.T, c cluster.Cluster, channel string) <-chan []byte {
	t.Helper()
	sctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	ch, err := c.Subscribe(sctx, channel)
	if err != nil {
		t.Fatalf("subscribe %s: %v", channel, err)
	}
	return ch
}

// recv returns the next message on ch, failing after wait.
func recv(t *testing.T, ch <-chan []byte, what string) []byte {
	t.Helper()
	select {
	case m, ok := <-ch:
		if !ok {
			t.Fatalf("%s: channel closed", what)
		}
		return m
	case <-time.After(wait):
		t.Fatalf("%s: nothing within %v", what, wait)
		return nil
	}
}

// eventually polls cond every 20 ms until it holds or wait passes.
func eventually(t *testing.T, what string, cond func() (bool, error)) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for i := 0; ; i++ {
		ok, err := cond()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if ok {
			return
		}
		if time.Now().After(deadline) || i > int(wait/(20*time.Millisecond))+10 {
			t.Fatalf("timed out after %v waiting for %s", wait, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func testPublishSubscribe(t *testing.T, p Pair) {
	c := ctx(t)
	subA, subB := subscribe(t, p.A, "x"), subscribe(t, p.B, "x")
	other := subscribe(t, p.B, "y")
	if err := p.A.Publish(c, "x", []byte("from a")); err != nil {
		t.Fatal(err)
	}
	if err := p.B.Publish(c, "x", []byte("from b")); err != nil {
		t.Fatal(err)
	}
	for _, s := range []struct {
		ch   <-chan []byte
		name string
	}{{subA, "a"}, {subB, "b"}} {
		got := []string{string(recv(t, s.ch, s.name)), string(recv(t, s.ch, s.name))}
		if got[0] != "from a" || got[1] != "from b" {
			t.Errorf("subscriber on %s got %q, want [from a from b]", s.name, got)
		}
	}
	// Channels are separate: the first message on y is the one sent there.
	if err := p.A.Publish(c, "y", []byte("on y")); err != nil {
		t.Fatal(err)
	}
	if m := recv(t, other, "y"); string(m) != "on y" {
		t.Errorf("y got %q first, want \"on y\"", m)
	}
}

func testOrderPerPublisher(t *testing.T, p Pair) {
	c := ctx(t)
	const n = 500
	subs := []<-chan []byte{subscribe(t, p.A, "o"), subscribe(t, p.B, "o")}
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	for name, r := range map[string]cluster.Cluster{"a": p.A, "b": p.B} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range n {
				if err := r.Publish(c, "o", fmt.Appendf(nil, "%s %d", name, i)); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for si, ch := range subs {
		next := map[string]int{"a": 0, "b": 0}
		for range 2 * n {
			m := recv(t, ch, fmt.Sprintf("subscriber %d", si))
			if m == nil {
				t.Fatalf("subscriber %d: unexpected loss marker", si)
			}
			var name string
			var i int
			if _, err := fmt.Sscanf(string(m), "%s %d", &name, &i); err != nil {
				t.Fatalf("subscriber %d: message %q: %v", si, m, err)
			}
			if i != next[name] {
				t.Fatalf("subscriber %d: from %s got %d, want %d (out of order or lost)", si, name, i, next[name])
			}
			next[name]++
		}
	}
}

func testPayloads(t *testing.T, p Pair) {
	c := ctx(t)
	sub := subscribe(t, p.B, "p")
	big := bytes.Repeat([]byte{0, 1, 2, 0xff, ' ', '\n'}, cluster.MaxPayload/6+1)[:cluster.MaxPayload]
	sent := [][]byte{{}, big, {0}, []byte("a b"), {}}
	for _, m := range sent {
		if err := p.A.Publish(c, "p", m); err != nil {
			t.Fatalf("publish %d bytes: %v", len(m), err)
		}
	}
	for i, want := range sent {
		got := recv(t, sub, "payloads")
		if got == nil {
			t.Fatalf("message %d: a %d-byte payload arrived as nil (the loss marker)", i, len(want))
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("message %d: got %d bytes, want %d, or different content", i, len(got), len(want))
		}
	}
	if err := p.A.Publish(c, "p", make([]byte, cluster.MaxPayload+1)); !errors.Is(err, cluster.ErrTooLarge) {
		t.Fatalf("publish of MaxPayload+1 bytes: %v, want ErrTooLarge", err)
	}
}

// testSlowSubscriber: a subscriber that does not read loses messages and
// is told so by a nil right after the last message it got (even when
// nothing else is published), then gets what follows; the publisher never
// blocks.
func testSlowSubscriber(t *testing.T, p Pair) {
	c := ctx(t)
	slow := subscribe(t, p.B, "s")
	marker := subscribe(t, p.B, "s-done")
	const n = 3000
	for i := range n {
		if err := p.A.Publish(c, "s", fmt.Appendf(nil, "%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	// Notifications of one replica arrive in order across channels: once
	// the marker is in, so is everything published on s before it.
	if err := p.A.Publish(c, "s-done", []byte("done")); err != nil {
		t.Fatal(err)
	}
	recv(t, marker, "marker")
	queued := len(slow)
	if queued >= n {
		t.Fatalf("subscriber buffered all %d messages; cannot test loss", n)
	}
	for i := range queued - 1 {
		if m := <-slow; string(m) != fmt.Sprint(i) {
			t.Fatalf("buffered message %d is %q", i, m)
		}
	}
	if m := <-slow; m != nil {
		t.Fatalf("the last of %d buffered messages is %q, want nil (the loss)", queued, m)
	}
	if err := p.A.Publish(c, "s", []byte("after")); err != nil {
		t.Fatal(err)
	}
	if m := recv(t, slow, "after the loss"); string(m) != "after" {
		t.Fatalf("after the loss marker got %q, want \"after\"", m)
	}
}

func testSubscribeEnds(t *testing.T, p Pair) {
	sctx, cancel := context.WithCancel(context.Background())
	ch, err := p.A.Subscribe(sctx, "e")
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	deadline := time.After(wait)
	for {
		select {
		case _, ok := <-ch:
			if !ok {
				return
			}
		case <-deadline:
			t.Fatal("channel not closed after its context ended")
		}
	}
}

// testNilAfterLoss: when the link to the shared state breaks, every
// subscriber gets nil, and delivery resumes without a restart.
func testNilAfterLoss(t *testing.T, p Pair) {
	if p.Cut == nil {
		t.Skip("this implementation cannot lose messages by a cut")
	}
	c := ctx(t)
	subA, subB := subscribe(t, p.A, "l"), subscribe(t, p.B, "l")
	p.Cut(t)
	for name, ch := range map[string]<-chan []byte{"a": subA, "b": subB} {
		if m := recv(t, ch, "loss marker on "+name); m != nil {
			t.Fatalf("%s: after the cut got %q, want nil", name, m)
		}
	}
	// Publish until it goes through (the first try may meet a dead
	// connection), then both receive.
	for name, ch := range map[string]<-chan []byte{"a": subA, "b": subB} {
		var got []byte
		eventually(t, "delivery after the cut to "+name, func() (bool, error) {
			if err := p.A.Publish(c, "l", []byte("back")); err != nil {
				if !errors.Is(err, cluster.ErrUnavailable) {
					return false, fmt.Errorf("publish error does not wrap ErrUnavailable: %w", err)
				}
				return false, nil
			}
			select {
			case got = <-ch:
				return true, nil
			case <-time.After(200 * time.Millisecond):
				return false, nil
			}
		})
		if string(got) != "back" {
			t.Fatalf("%s: after the cut got %q, want \"back\"", name, got)
		}
	}
}

func testHeartbeat(t *testing.T, p Pair) {
	c := ctx(t)
	t0 := time.Now().Truncate(time.Microsecond)
	ra := cluster.Replica{ID: p.A.Self(), PublicURL: "https://a:8443", SignalURL: "https://a:8444",
		RelayURLs: []string{"turn:a:3478", "turn:a:3479"}, Version: "v1", Started: t0.Add(-time.Hour)}
	rb := cluster.Replica{ID: p.B.Self(), PublicURL: "https://b:8443", Version: "v2", Started: t0}
	if _, err := p.B.Heartbeat(c, rb, time.Minute); err != nil {
		t.Fatal(err)
	}
	if _, err := p.A.Heartbeat(c, ra, time.Minute); err != nil {
		t.Fatal(err)
	}
	list, err := p.B.Heartbeat(c, rb, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || list[0].ID != p.A.Self() || list[1].ID != p.B.Self() {
		t.Fatalf("heartbeat lists %+v, want a then b (oldest Started first)", list)
	}
	got := list[0]
	if got.PublicURL != ra.PublicURL || got.SignalURL != ra.SignalURL || !slices.Equal(got.RelayURLs, ra.RelayURLs) ||
		got.Version != ra.Version || !got.Started.Equal(ra.Started) {
		t.Errorf("replica a round-tripped as %+v, want %+v", got, ra)
	}
	if got.Seen.IsZero() || list[1].Seen.IsZero() {
		t.Error("Seen not set")
	}
	if len(list[1].RelayURLs) != 0 {
		t.Errorf("replica b has relays %q, want none", list[1].RelayURLs)
	}
}

// testForgetDeadReplica: a replica that stops its heartbeats is forgotten
// after ttl, with its presence and its leases.
func testForgetDeadReplica(t *testing.T, p Pair) {
	c := ctx(t)
	const ttl = 300 * time.Millisecond
	ra := cluster.Replica{ID: p.A.Self(), Started: time.Now()}
	rb := cluster.Replica{ID: p.B.Self(), Started: time.Now()}
	if _, err := p.A.Heartbeat(c, ra, ttl); err != nil {
		t.Fatal(err)
	}
	if _, err := p.B.Heartbeat(c, rb, ttl); err != nil {
		t.Fatal(err)
	}
	if err := p.A.SetPresent(c, "peer:1", true); err != nil {
		t.Fatal(err)
	}
	if ok, err := p.A.Lead(c, "job", time.Hour); err != nil || !ok {
		t.Fatalf("a takes a free lease: %v %v", ok, err)
	}
	if ids, err := p.B.Present(c, "peer:1"); err != nil || !slices.Equal(ids, []string{p.A.Self()}) {
		t.Fatalf("b sees peer:1 on %q (%v), want [a]", ids, err)
	}
	// a stops; b goes on.
	eventually(t, "b to forget a", func() (bool, error) {
		list, err := p.B.Heartbeat(c, rb, ttl)
		return len(list) == 1 && list[0].ID == p.B.Self(), err
	})
	if ids, err := p.B.Present(c, "peer:1"); err != nil || len(ids) != 0 {
		t.Errorf("peer:1 still present on %q (%v) after its replica was forgotten", ids, err)
	}
	if keys, err := p.B.PresentWithPrefix(c, "peer:"); err != nil || len(keys) != 0 {
		t.Errorf("prefix lists %q (%v) after the replica was forgotten", keys, err)
	}
	if ok, err := p.B.Lead(c, "job", time.Hour); err != nil || !ok {
		t.Errorf("b cannot take the lease of a forgotten replica: %v %v", ok, err)
	}
}

// testLeadExclusive: replicas racing for one lease: exactly one wins,
// and only the winner renews.
func testLeadExclusive(t *testing.T, p Pair) {
	c := ctx(t)
	var mu sync.Mutex
	winners := map[string]int{}
	var wg sync.WaitGroup
	for i := range 20 {
		r := p.A
		if i%2 == 1 {
			r = p.B
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			ok, err := r.Lead(c, "race", time.Hour)
			if err != nil {
				t.Error(err)
				return
			}
			if ok {
				mu.Lock()
				winners[r.Self()]++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(winners) != 1 {
		t.Fatalf("lease held by %d replicas at once: %v", len(winners), winners)
	}
	var holder, other cluster.Cluster = p.A, p.B
	if winners[p.B.Self()] > 0 {
		holder, other = p.B, p.A
	}
	if ok, err := holder.Lead(c, "race", time.Hour); err != nil || !ok {
		t.Errorf("holder cannot renew: %v %v", ok, err)
	}
	if ok, err := other.Lead(c, "race", time.Hour); err != nil || ok {
		t.Errorf("other replica takes a held lease: %v %v", ok, err)
	}
	if ok, err := other.Lead(c, "another", time.Hour); err != nil || !ok {
		t.Errorf("leases are not independent: %v %v", ok, err)
	}
}

func testLeadTakeover(t *testing.T, p Pair) {
	c := ctx(t)
	if ok, err := p.A.Lead(c, "job", 200*time.Millisecond); err != nil || !ok {
		t.Fatalf("a takes a free lease: %v %v", ok, err)
	}
	if ok, err := p.B.Lead(c, "job", time.Hour); err != nil || ok {
		t.Fatalf("b takes a's lease before it expired: %v %v", ok, err)
	}
	eventually(t, "b to take the expired lease", func() (bool, error) {
		return p.B.Lead(c, "job", time.Hour)
	})
	if ok, err := p.A.Lead(c, "job", time.Hour); err != nil || ok {
		t.Fatalf("a takes back a lease b holds: %v %v", ok, err)
	}
}

func testPresence(t *testing.T, p Pair) {
	c := ctx(t)
	for _, r := range []cluster.Cluster{p.A, p.B} {
		if _, err := r.Heartbeat(c, cluster.Replica{ID: r.Self(), Started: time.Now()}, time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(p.A.SetPresent(c, "peer:1", true))
	must(p.B.SetPresent(c, "peer:1", true))
	must(p.B.SetPresent(c, "peer:2", true))
	must(p.B.SetPresent(c, "peer:2", true)) // twice is once
	must(p.A.SetPresent(c, "signal:k", true))
	both := []string{p.A.Self(), p.B.Self()}
	slices.Sort(both)
	for _, r := range []cluster.Cluster{p.A, p.B} {
		if ids, err := r.Present(c, "peer:1"); err != nil || !slices.Equal(ids, both) {
			t.Errorf("peer:1 present on %q (%v), want %q", ids, err, both)
		}
		if keys, err := r.PresentWithPrefix(c, "peer:"); err != nil || !slices.Equal(keys, []string{"peer:1", "peer:2"}) {
			t.Errorf("prefix peer: lists %q (%v)", keys, err)
		}
	}
	must(p.B.SetPresent(c, "peer:1", false))
	must(p.B.SetPresent(c, "peer:2", false))
	if ids, err := p.B.Present(c, "peer:1"); err != nil || !slices.Equal(ids, []string{p.A.Self()}) {
		t.Errorf("after b cleared it, peer:1 present on %q (%v), want [a]", ids, err)
	}
	if ids, err := p.A.Present(c, "peer:2"); err != nil || len(ids) != 0 {
		t.Errorf("cleared peer:2 present on %q (%v)", ids, err)
	}
	if keys, err := p.A.PresentWithPrefix(c, "signal:"); err != nil || !slices.Equal(keys, []string{"signal:k"}) {
		t.Errorf("prefix signal: lists %q (%v)", keys, err)
	}
}

func testTakeOnce(t *testing.T, p Pair) {
	c := ctx(t)
	now := time.Now()
	if err := p.A.PutOnce(c, "tok", now.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	var wins sync.Map
	var wg sync.WaitGroup
	for i := range 16 {
		r := p.A
		if i%2 == 1 {
			r = p.B
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			ok, err := r.TakeOnce(c, "tok", time.Now())
			if err != nil {
				t.Error(err)
			}
			if ok {
				wins.Store(i, true)
			}
		}()
	}
	wg.Wait()
	n := 0
	wins.Range(func(any, any) bool { n++; return true })
	if n != 1 {
		t.Fatalf("token taken %d times, want exactly once", n)
	}
	if ok, err := p.B.TakeOnce(c, "unknown", time.Now()); err != nil || ok {
		t.Errorf("unknown token taken: %v %v", ok, err)
	}
	if err := p.B.PutOnce(c, "late", time.Now().Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if ok, err := p.A.TakeOnce(c, "late", time.Now().Add(2*time.Minute)); err != nil || ok {
		t.Errorf("expired token taken: %v %v", ok, err)
	}
	if ok, err := p.A.TakeOnce(c, "late", time.Now()); err != nil || ok {
		t.Errorf("an expired token stays takeable after a refused take: %v %v", ok, err)
	}
}

// testClose: a closed replica's presence and leases go at once.
func testClose(t *testing.T, p Pair) {
	c := ctx(t)
	for _, r := range []cluster.Cluster{p.A, p.B} {
		if _, err := r.Heartbeat(c, cluster.Replica{ID: r.Self(), Started: time.Now()}, time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.A.SetPresent(c, "peer:9", true); err != nil {
		t.Fatal(err)
	}
	if ok, err := p.A.Lead(c, "job", time.Hour); err != nil || !ok {
		t.Fatalf("a takes a free lease: %v %v", ok, err)
	}
	if err := p.A.Close(); err != nil {
		t.Fatal(err)
	}
	if ids, err := p.B.Present(c, "peer:9"); err != nil || len(ids) != 0 {
		t.Errorf("peer:9 present on %q (%v) after its replica closed", ids, err)
	}
	if ok, err := p.B.Lead(c, "job", time.Hour); err != nil || !ok {
		t.Errorf("lease of a closed replica not free: %v %v", ok, err)
	}
	list, err := p.B.Heartbeat(c, cluster.Replica{ID: p.B.Self(), Started: time.Now()}, time.Minute)
	if err != nil || len(list) != 1 || list[0].ID != p.B.Self() {
		t.Errorf("after a closed, heartbeat lists %+v (%v), want b only", list, err)
	}
}
