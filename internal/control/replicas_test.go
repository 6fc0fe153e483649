package control_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"

	adminv1 "meshd/api/admin/v1"
	controlv1 "meshd/api/control/v1"
	"meshd/api/control/v1/controlv1connect"
	"meshd/internal/cluster"
	"meshd/internal/control"
	"meshd/internal/control/controltest"
	"meshd/internal/controlclient"
	"meshd/internal/keys"
	"meshd/internal/seal"
)

// spread is how fast a change must reach the streams of every replica.
const spread = time.Second

// within waits for pred on agent a and fails when it took longer than
// spread since start.
func within(t *testing.T, start time.Time, a *controltest.Agent, what string, pred func(*controltest.Map) bool) {
	t.Helper()
	a.WaitFor(t, what, pred)
	if d := time.Since(start); d > spread {
		t.Fatalf("%s: %s reached %s after %s, want within %s", a.Name, what, a.Name, d, spread)
	}
}

func listed(name string, want bool) func(*controltest.Map) bool {
	return func(m *controltest.Map) bool { return slices.Contains(controltest.PeerNames(m), name) == want }
}

// A change made through one replica reaches the streams of the other within
// a second: a rename through A reaches an agent streaming from B, a policy
// removed through B cuts the peers of an agent streaming from A.
func TestReplicasShareChanges(t *testing.T) {
	r := controltest.NewReplicas(t, 2)
	ctx := context.Background()
	a := r[0].AddAgent(controltest.AgentOptions{Hostname: "a"})
	b := r[1].AddAgent(controltest.AgentOptions{Hostname: "b"})
	// Each joined through its own replica and sees the other.
	a.WaitFor(t, "b", listed("b", true))
	b.WaitFor(t, "a", listed("a", true))

	start := time.Now()
	must[adminv1.Peer](t)(r[0].Admin.UpdatePeer(ctx, connect.NewRequest(&adminv1.UpdatePeerRequest{Id: "a", Name: ptr("a2")})))
	within(t, start, b, "a renamed a2", listed("a2", true))

	start = time.Now()
	must[adminv1.DeletePolicyResponse](t)(r[1].Admin.DeletePolicy(ctx, connect.NewRequest(&adminv1.DeletePolicyRequest{Id: "Default"})))
	within(t, start, a, "no peers", func(m *controltest.Map) bool { return len(m.Peers) == 0 })
	within(t, start, b, "no peers", func(m *controltest.Map) bool { return len(m.Peers) == 0 })
	checkLatest(t, r[0], a)
	checkLatest(t, r[1], b)
}

// A burst of changes through one replica reaches the other replica's
// streams as a few maps, not one per change.
func TestReplicasCoalesce(t *testing.T) {
	const coalesce = 200 * time.Millisecond
	r := controltest.NewReplicas(t, 2, controltest.WithOptions(func(o *control.Options) { o.Coalesce = coalesce }))
	ctx := context.Background()
	x := r[0].AddAgent(controltest.AgentOptions{Hostname: "x"})
	b := r[1].AddAgent(controltest.AgentOptions{Hostname: "b"})
	b.WaitFor(t, "x online", peerOnline("x", true))
	before, start := b.Count(), time.Now()
	const changes = 20
	for i := range changes {
		must[adminv1.Peer](t)(r[0].Admin.UpdatePeer(ctx, connect.NewRequest(&adminv1.UpdatePeerRequest{Id: x.Self.PeerId,
			Name: ptr("x" + strings.Repeat("x", i+1))})))
	}
	b.WaitFor(t, "the last name", listed("x"+strings.Repeat("x", changes), true))
	// A round per coalescing delay at most, and the round that saw the
	// first change (a slow machine spreads the burst).
	took := time.Since(start)
	if got, limit := b.Count()-before, int(took/coalesce)+2; got > limit || got >= changes/2 {
		t.Fatalf("%d changes through replica A in %s sent %d maps on replica B, want at most %d", changes, took, got, min(limit, changes/2-1))
	}
	checkLatest(t, r[1], b)
}

// Serials come from the database: an agent that moves between replicas
// sees them grow, map after map.
func TestReplicasSerialsGrow(t *testing.T) {
	r := controltest.NewReplicas(t, 2)
	ctx := context.Background()
	other := r[0].AddAgent(controltest.AgentOptions{Hostname: "other"})
	key, _ := keys.Generate()
	var serials []uint64
	for i := range 6 {
		h := r[i%2]
		x := h.AddAgent(controltest.AgentOptions{Hostname: "x", Key: key})
		x.WaitFor(t, "other", func(m *controltest.Map) bool { return len(m.Peers) == 1 })
		// A change through the other replica: a round's serial on this one.
		name := "other-" + string(rune('a'+i))
		must[adminv1.Peer](t)(r[(i+1)%2].Admin.UpdatePeer(ctx, connect.NewRequest(&adminv1.UpdatePeerRequest{Id: other.Self.PeerId, Name: &name})))
		x.WaitFor(t, name, listed(name, true))
		x.Stop()
		serials = append(serials, x.Serials()...)
	}
	if !slices.IsSorted(serials) || len(slices.Compact(slices.Clone(serials))) != len(serials) {
		t.Fatalf("serials across replicas not strictly increasing: %v", serials)
	}
	t.Logf("serials %v", serials)
}

// A key-proof challenge issued by one replica is good on another, once.
func TestReplicasChallenge(t *testing.T) {
	r := controltest.NewReplicas(t, 2)
	ctx := context.Background()
	rpcA := controlv1connect.NewControlServiceClient(r[0].HTTPClient(), r[0].URL)
	rpcB := controlv1connect.NewControlServiceClient(r[1].HTTPClient(), r[1].URL)
	mine, _ := keys.Generate()
	pub := mine.Public()
	resp, err := rpcA.Challenge(ctx, connect.NewRequest(&controlv1.ChallengeRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	srv, _ := keys.FromBytes(resp.Msg.ServerPublicKey)
	n, s := prove(t, seal.PurposeLogin, resp.Msg.Challenge, srv, mine)
	proof := &controlv1.Proof{PublicKey: pub[:], Challenge: resp.Msg.Challenge, Nonce: n[:], Sealed: s}
	login := func(rpc controlv1connect.ControlServiceClient) error {
		_, err := rpc.Login(ctx, connect.NewRequest(&controlv1.LoginRequest{Proof: proof, SetupKey: r[0].Boot.SetupKey,
			Meta: &controlv1.PeerMeta{Hostname: "x"}}))
		return err
	}
	if err := login(rpcB); err != nil {
		t.Fatalf("challenge of A proven on B: %v", err)
	}
	for name, rpc := range map[string]controlv1connect.ControlServiceClient{"A": rpcA, "B": rpcB} {
		if err := login(rpc); !errors.Is(controlclientRefused(err), controlclient.ErrProofFailed) {
			t.Fatalf("used challenge replayed on %s: %v", name, err)
		}
	}
}

// An admin token made through one replica works on the other within a
// second; deleted, it stops working there within a second.
func TestReplicasAdminTokens(t *testing.T) {
	r := controltest.NewReplicas(t, 2)
	ctx := context.Background()
	tok := must[adminv1.AdminToken](t)(r[0].Admin.CreateAdminToken(ctx, connect.NewRequest(&adminv1.CreateAdminTokenRequest{Name: "ci"})))
	onB := r[1].AdminClient(tok.Token)
	works := func(want bool) {
		t.Helper()
		deadline := time.Now().Add(spread)
		for {
			_, err := onB.GetAccount(ctx, connect.NewRequest(&adminv1.GetAccountRequest{}))
			if (err == nil) == want {
				return
			}
			if want == false && connect.CodeOf(err) != connect.CodeUnauthenticated && err != nil {
				t.Fatalf("token on B: %v", err)
			}
			if time.Now().After(deadline) {
				t.Fatalf("token on B: works=%v after %s, want %v (%v)", err == nil, spread, want, err)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	works(true)
	must[adminv1.DeleteAdminTokenResponse](t)(r[0].Admin.DeleteAdminToken(ctx, connect.NewRequest(&adminv1.DeleteAdminTokenRequest{Id: tok.Id})))
	works(false)
}

// Agents joining through two replicas at the same time all get addresses
// and names of their own (a replica that picked one the other took picks
// again).
func TestReplicasJoinAtOnce(t *testing.T) {
	r := controltest.NewReplicas(t, 2)
	const each = 8
	errs := make(chan error, 2*each)
	var agents []*controltest.Agent
	for i := range 2 * each {
		agents = append(agents, r[i%2].NewAgent(controltest.AgentOptions{Hostname: "host"}))
	}
	for _, a := range agents {
		go func() { errs <- a.Login("") }()
	}
	for range agents {
		if err := <-errs; err != nil {
			t.Fatalf("join: %v", err)
		}
	}
	ips, names := map[string]bool{}, map[string]bool{}
	for _, a := range agents {
		ips[a.Self.OverlayIp], names[a.Self.Name] = true, true
	}
	if len(ips) != 2*each || len(names) != 2*each {
		t.Fatalf("%d agents got %d addresses and %d names", 2*each, len(ips), len(names))
	}
}

// lossy loses what it publishes while lose is set, and lets a test tell its
// subscribers that messages were lost (the nil payload).
type lossy struct {
	cluster.Cluster
	lose   atomic.Bool
	inject chan []byte
}

func (l *lossy) Publish(ctx context.Context, channel string, payload []byte) error {
	if l.lose.Load() {
		return nil
	}
	return l.Cluster.Publish(ctx, channel, payload)
}

func (l *lossy) Subscribe(ctx context.Context, channel string) (<-chan []byte, error) {
	in, err := l.Cluster.Subscribe(ctx, channel)
	if err != nil {
		return nil, err
	}
	out := make(chan []byte)
	go func() {
		defer close(out)
		for {
			var b []byte
			select {
			case m, ok := <-in:
				if !ok {
					return
				}
				b = m
			case b = <-l.inject:
			}
			select {
			case out <- b:
			case <-ctx.Done():
				return
			}
		}
	}()
	return out, nil
}

// A replica told that messages were lost reloads everything: a change whose
// message never came reaches its streams.
func TestReplicasLostMessages(t *testing.T) {
	var ls []*lossy
	r := controltest.NewReplicas(t, 2, controltest.WrapCluster(func(c cluster.Cluster) cluster.Cluster {
		l := &lossy{Cluster: c, inject: make(chan []byte)}
		ls = append(ls, l)
		return l
	}))
	ctx := context.Background()
	a := r[0].AddAgent(controltest.AgentOptions{Hostname: "a"})
	b := r[1].AddAgent(controltest.AgentOptions{Hostname: "b"})
	b.WaitFor(t, "a", listed("a", true))
	ls[0].lose.Store(true)
	must[adminv1.DeletePolicyResponse](t)(r[0].Admin.DeletePolicy(ctx, connect.NewRequest(&adminv1.DeletePolicyRequest{Id: "Default"})))
	a.WaitFor(t, "no peers", func(m *controltest.Map) bool { return len(m.Peers) == 0 })
	if got := b.Latest(); !slices.Contains(controltest.PeerNames(got), "a") {
		t.Fatalf("b heard of the change whose message was lost: %v", controltest.PeerNames(got))
	}
	start := time.Now()
	ls[1].inject <- nil
	within(t, start, b, "no peers after the resync", func(m *controltest.Map) bool { return len(m.Peers) == 0 })
	checkLatest(t, r[1], b)
}
