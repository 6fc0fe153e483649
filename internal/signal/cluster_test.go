package signal_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"

	"meshd/internal/cluster"
	"meshd/internal/keys"
	"meshd/internal/metricstest"
	"meshd/internal/seal"
	"meshd/internal/signal"
	"meshd/internal/signal/signaltest"
	"meshd/internal/signalclient"
	"meshd/internal/testutil"
)

func instances(t *testing.T, n int, opts signal.Options, g *cluster.Group) []*signaltest.Instance {
	t.Helper()
	if g == nil {
		g = cluster.NewGroup(nil)
	}
	return signaltest.StartInstances(t, n, signaltest.Options{Signal: opts}, signaltest.GroupClusters(g))
}

func TestOfferAnswerAndCandidatesAcrossInstances(t *testing.T) {
	in := instances(t, 2, signal.Options{}, nil)
	inA, inB := newInbox(), newInbox()
	a := in[0].Peer(t, signaltest.PeerOptions{OnMessage: inA.add})
	b := in[1].Peer(t, signaltest.PeerOptions{OnMessage: inB.add})

	if err := a.Send(ctx(t), b.PublicKey(), []byte("offer")); err != nil {
		t.Fatalf("offer: %v", err)
	}
	if got := inB.wait(t, 1); got[0].from != a.PublicKey() || string(got[0].payload) != "offer" {
		t.Fatalf("b got %q from %s", got[0].payload, got[0].from)
	}
	if err := b.Send(ctx(t), a.PublicKey(), []byte("answer")); err != nil {
		t.Fatalf("answer: %v", err)
	}
	if got := inA.wait(t, 1); got[0].from != b.PublicKey() || string(got[0].payload) != "answer" {
		t.Fatalf("a got %q from %s", got[0].payload, got[0].from)
	}
	// Candidates both ways, at once: each side's arrive in order.
	const n = 50
	errs := make(chan error, 2)
	for _, p := range []struct {
		from *signaltest.Peer
		to   keys.Key
	}{{a, b.PublicKey()}, {b, a.PublicKey()}} {
		go func() {
			for i := range n {
				if err := p.from.Send(ctx(t), p.to, fmt.Appendf(nil, "candidate %d", i)); err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	for name, box := range map[string]*inbox{"a": inA, "b": inB} {
		got := box.wait(t, n+1)
		for i, m := range got[1:] {
			if want := fmt.Sprintf("candidate %d", i); string(m.payload) != want {
				t.Fatalf("%s: message %d is %q, want %q", name, i+1, m.payload, want)
			}
		}
	}
	s0, s1 := in[0].Signal.Stats(), in[1].Signal.Stats()
	if s0.RemoteSent != n+1 || s1.RemoteSent != n+1 || s0.RemoteReceived != n+1 || s1.RemoteReceived != n+1 ||
		s0.RemoteDropped+s1.RemoteDropped+s0.RemoteLost+s1.RemoteLost != 0 {
		t.Fatalf("stats %+v and %+v", s0, s1)
	}
	m := metricstest.Scrape(t, metricstest.Serve(t, in[1].Signal.Metrics()))
	if got := m.Value(t, "meshd_signal_instance_messages_total", "result", "received"); got != n+1 {
		t.Fatalf("received from the other instance on /metrics: %g, want %d", got, n+1)
	}
}

func TestNotConnectedOnlyWhenPresentNowhere(t *testing.T) {
	in := instances(t, 3, signal.Options{}, nil)
	a := in[0].Peer(t, signaltest.PeerOptions{})
	nobody, _ := keys.Generate()
	if err := a.Send(ctx(t), nobody.Public(), []byte("x")); !errors.Is(err, signalclient.ErrNotConnected) {
		t.Fatalf("send to a key registered nowhere: %v, want ErrNotConnected", err)
	}
	b := in[2].Peer(t, signaltest.PeerOptions{})
	if err := a.Send(ctx(t), b.PublicKey(), []byte("x")); err != nil {
		t.Fatalf("send to a peer at another instance: %v", err)
	}
	// Leaving is announced: no waiting for the cache to expire.
	b.Stop()
	testutil.WaitFor(t, 10*time.Second, "the stopped peer to be reported offline", func() bool {
		return errors.Is(a.Send(ctx(t), b.PublicKey(), []byte("x")), signalclient.ErrNotConnected)
	})
	if p, err := in[2].Cluster.Present(ctx(t), signal.PresenceKey(b.PublicKey(), "")); err != nil || len(p) != 0 {
		t.Fatalf("presence of the stopped peer: %v, %v; want none", p, err)
	}
}

func TestPeerThatMovesIsReachableWhereItIs(t *testing.T) {
	in := instances(t, 2, signal.Options{}, nil)
	a := in[0].Peer(t, signaltest.PeerOptions{})
	k, _ := keys.Generate()

	// Registered twice on one instance: the second replaces the first,
	// and the key stays present when the first's stream ends.
	r1 := in[1].Register(t, k)
	r2 := in[1].Register(t, k)
	if _, err := r1.Stream.Receive(); connect.CodeOf(err) != connect.CodeAborted {
		t.Fatalf("first stream: %v, want aborted (replaced)", err)
	}
	r1.Close()
	if err := a.Send(ctx(t), k.Public(), []byte("to r2")); err != nil {
		t.Fatalf("send after a replacement on one instance: %v", err)
	}
	if m, err := r2.Stream.Receive(); err != nil || m.GetEnvelope() == nil {
		t.Fatalf("second stream: %v, %v; want the envelope", m, err)
	}

	// It moves to instance 0 while its stream at 1 is still open (a peer
	// whose old connection has not died yet): the stale stream is
	// replaced, and envelopes go to the new one.
	box := newInbox()
	p := in[0].Peer(t, signaltest.PeerOptions{Key: k, OnMessage: box.add})
	done := make(chan error, 1)
	go func() {
		for {
			if _, err := r2.Stream.Receive(); err != nil {
				done <- err
				return
			}
		}
	}()
	select {
	case err := <-done:
		if connect.CodeOf(err) != connect.CodeAborted {
			t.Fatalf("stale stream at the other instance: %v, want aborted (replaced)", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the stale stream at the other instance was not replaced")
	}
	if err := a.Send(ctx(t), k.Public(), []byte("here")); err != nil {
		t.Fatal(err)
	}
	if got := box.wait(t, 1); string(got[0].payload) != "here" {
		t.Fatalf("got %q", got[0].payload)
	}

	// And back to instance 1, from a fresh connection.
	p.Stop()
	box2 := newInbox()
	in[1].Peer(t, signaltest.PeerOptions{Key: k, OnMessage: box2.add})
	testutil.WaitFor(t, 10*time.Second, "the moved peer to be reachable at instance 1", func() bool {
		_ = a.Send(ctx(t), k.Public(), []byte("again"))
		return box2.len() > 0
	})
}

func TestDeadInstanceIsForgotten(t *testing.T) {
	clk := &clock{t: time.Unix(1_700_000_000, 0)}
	g := cluster.NewGroup(clk.now)
	in := instances(t, 3, signal.Options{Now: clk.now}, g)
	const ttl = 15 * time.Second
	beat := func(i int) {
		t.Helper()
		if _, err := in[i].Cluster.Heartbeat(ctx(t), cluster.Replica{}, ttl); err != nil {
			t.Fatal(err)
		}
	}
	for i := range in {
		beat(i)
	}
	a := in[0].Peer(t, signaltest.PeerOptions{})
	b := in[1].Peer(t, signaltest.PeerOptions{})
	c := in[2].Peer(t, signaltest.PeerOptions{})
	for _, to := range []keys.Key{b.PublicKey(), c.PublicKey()} {
		if err := a.Send(ctx(t), to, []byte("x")); err != nil {
			t.Fatalf("before: %v", err)
		}
	}

	// Instance 2 shuts down: its peers' presence goes with their streams.
	_ = in[2].Signal.Close()
	testutil.WaitFor(t, 10*time.Second, "a closed instance's peer to be reported offline", func() bool {
		return errors.Is(a.Send(ctx(t), c.PublicKey(), []byte("x")), signalclient.ErrNotConnected)
	})

	// Instance 1 dies without a word: no heartbeat for the ttl. Until the
	// others forget it, its peers are still where they were.
	clk.add(ttl - time.Second)
	beat(0)
	if err := a.Send(ctx(t), b.PublicKey(), []byte("x")); err != nil {
		t.Fatalf("within the ttl: %v", err)
	}
	clk.add(2 * time.Second)
	beat(0)
	err := a.Send(ctx(t), b.PublicKey(), []byte("x"))
	if !errors.Is(err, signalclient.ErrNotConnected) {
		t.Fatalf("after the dead instance's ttl: %v, want ErrNotConnected", err)
	}
	if p, err := in[0].Cluster.Present(ctx(t), signal.PresenceKey(b.PublicKey(), "")); err != nil || len(p) != 0 {
		t.Fatalf("presence at the dead instance: %v, %v", p, err)
	}
}

func TestLimitsApplyAcrossInstances(t *testing.T) {
	clk := &clock{t: time.Unix(1_700_000_000, 0)}
	tickets := signaltest.NewTickets(t)
	in := instances(t, 2, signal.Options{RatePerSecond: 2, Burst: 3, Now: clk.now, TicketKey: tickets.Public}, nil)
	exp := clk.now().Add(time.Hour)
	peer := func(i int, account string, box *inbox) *signaltest.Peer {
		k, _ := keys.Generate()
		o := signaltest.PeerOptions{Key: k, Ticket: tickets.Issue(t, k.Public(), account, exp)}
		if box != nil {
			o.OnMessage = box.add
		}
		return in[i].Peer(t, o)
	}
	box := newInbox()
	a := peer(0, "acct-a", nil)
	b := peer(1, "acct-a", box)
	outsider := peer(0, "acct-b", nil)

	// Another account's peer learns nothing, wherever it is.
	if err := outsider.Send(ctx(t), b.PublicKey(), []byte("x")); !errors.Is(err, signalclient.ErrNotConnected) {
		t.Fatalf("another account's peer: %v, want ErrNotConnected", err)
	}
	// The sender's instance applies the sender's rate.
	for i := range 3 {
		if err := a.Send(ctx(t), b.PublicKey(), []byte("x")); err != nil {
			t.Fatalf("send %d within burst: %v", i, err)
		}
	}
	if err := a.Send(ctx(t), b.PublicKey(), []byte("x")); !errors.Is(err, signalclient.ErrRateLimited) {
		t.Fatalf("beyond burst: %v, want ErrRateLimited", err)
	}
	box.wait(t, 3)
	clk.add(time.Hour) // refill

	// One envelope must fit one bus payload.
	largest := signal.MaxRemoteMessageBytes - seal.Overhead
	if err := a.Send(ctx(t), b.PublicKey(), make([]byte, largest)); err != nil {
		t.Fatalf("largest payload across instances: %v", err)
	}
	box.wait(t, 4)
	err := a.Send(ctx(t), b.PublicKey(), make([]byte, largest+1))
	if !errors.Is(err, signalclient.ErrTooLarge) || !strings.Contains(err.Error(), "another signal instance") {
		t.Fatalf("payload too large for the bus: %v, want ErrTooLarge naming the instance limit", err)
	}
	// On one instance the limit is signal's own.
	local := peer(0, "acct-a", nil)
	if err := local.Send(ctx(t), a.PublicKey(), make([]byte, largest+1)); err != nil {
		t.Fatalf("same payload on one instance: %v", err)
	}
	s := in[1].Signal.Stats()
	if s.RemoteReceived != 4 || s.RemoteDropped != 0 {
		t.Fatalf("receiving instance's stats %+v", s)
	}
}

func TestPresenceIsRestoredAfterTheClusterForgot(t *testing.T) {
	in := instances(t, 2, signal.Options{}, nil)
	a := in[0].Peer(t, signaltest.PeerOptions{})
	b := in[1].Peer(t, signaltest.PeerOptions{})
	pk := signal.PresenceKey(b.PublicKey(), "")
	// The cluster forgets instance 1's presence (as when its heartbeats
	// failed for the ttl)...
	if err := in[1].Cluster.SetPresent(context.Background(), pk, false); err != nil {
		t.Fatal(err)
	}
	// ...and its heartbeat owner restores it once heartbeats succeed.
	in[1].Signal.RestorePresence()
	if p, err := in[0].Cluster.Present(ctx(t), pk); err != nil || len(p) != 1 || p[0] != in[1].Cluster.Self() {
		t.Fatalf("presence after restore: %v, %v", p, err)
	}
	if err := a.Send(ctx(t), b.PublicKey(), []byte("x")); err != nil {
		t.Fatal(err)
	}
}

// downCluster fails every presence call while down is set, as a cluster
// whose database is unreachable does.
type downCluster struct {
	cluster.Cluster
	down atomic.Bool
}

func (d *downCluster) SetPresent(ctx context.Context, key string, present bool) error {
	if d.down.Load() {
		return fmt.Errorf("presence: %w", cluster.ErrUnavailable)
	}
	return d.Cluster.SetPresent(ctx, key, present)
}

func (d *downCluster) Present(ctx context.Context, key string) ([]string, error) {
	if d.down.Load() {
		return nil, fmt.Errorf("presence: %w", cluster.ErrUnavailable)
	}
	return d.Cluster.Present(ctx, key)
}

func TestRegistrationsWorkWhileTheStoreIsDown(t *testing.T) {
	g := cluster.NewGroup(nil)
	c0 := &downCluster{Cluster: g.Join()}
	joined := 0
	in := signaltest.StartInstances(t, 2, signaltest.Options{}, func(testing.TB) cluster.Cluster {
		if joined++; joined == 1 {
			return c0
		}
		return g.Join()
	})
	a := in[1].Peer(t, signaltest.PeerOptions{})
	c0.down.Store(true)
	box := newInbox()
	b := in[0].Peer(t, signaltest.PeerOptions{OnMessage: box.add})
	local := in[0].Peer(t, signaltest.PeerOptions{})
	// Peers of one instance still reach each other.
	if err := local.Send(ctx(t), b.PublicKey(), []byte("local")); err != nil {
		t.Fatalf("send on one instance while the store is down: %v", err)
	}
	box.wait(t, 1)
	if err := a.Send(ctx(t), b.PublicKey(), []byte("x")); !errors.Is(err, signalclient.ErrNotConnected) {
		t.Fatalf("send to a peer whose presence could not be written: %v, want ErrNotConnected", err)
	}
	// Once the store is back, the presence is written without a
	// reconnect.
	c0.down.Store(false)
	testutil.WaitFor(t, 10*time.Second, "the peer to be reachable from the other instance", func() bool {
		return a.Send(ctx(t), b.PublicKey(), []byte("remote")) == nil
	})
	box.wait(t, 2)
}

// lookups counts calls of Present.
type lookups struct {
	cluster.Cluster
	n atomic.Int64
}

func (l *lookups) Present(ctx context.Context, key string) ([]string, error) {
	l.n.Add(1)
	return l.Cluster.Present(ctx, key)
}

func TestLookupsAreCachedNotMadePerMessage(t *testing.T) {
	clk := &clock{t: time.Unix(1_700_000_000, 0)}
	g := cluster.NewGroup(clk.now)
	c0 := &lookups{Cluster: g.Join()}
	joined := 0
	in := signaltest.StartInstances(t, 2, signaltest.Options{Signal: signal.Options{Now: clk.now}}, func(testing.TB) cluster.Cluster {
		if joined++; joined == 1 {
			return c0
		}
		return g.Join()
	})
	box := newInbox()
	a := in[0].Peer(t, signaltest.PeerOptions{})
	b := in[1].Peer(t, signaltest.PeerOptions{OnMessage: box.add})
	const n = 50
	for i := range n {
		if err := a.Send(ctx(t), b.PublicKey(), []byte("candidate")); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
	}
	box.wait(t, n)
	if got := c0.n.Load(); got != 1 {
		t.Fatalf("%d lookups for %d messages to one peer, want 1", got, n)
	}
	// The cache expires: the next message looks the key up again.
	clk.add(time.Minute)
	if err := a.Send(ctx(t), b.PublicKey(), []byte("candidate")); err != nil {
		t.Fatal(err)
	}
	if got := c0.n.Load(); got != 2 {
		t.Fatalf("%d lookups after the cache expired, want 2", got)
	}
}
