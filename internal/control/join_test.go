package control_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	adminv1 "meshd/api/admin/v1"
	controlv1 "meshd/api/control/v1"
	"meshd/api/control/v1/controlv1connect"
	"meshd/internal/control/controltest"
	"meshd/internal/controlclient"
	"meshd/internal/keys"
	"meshd/internal/seal"
)

func createKey(t *testing.T, h *controltest.Harness, req *adminv1.CreateSetupKeyRequest) string {
	t.Helper()
	resp, err := h.Admin.CreateSetupKey(context.Background(), connect.NewRequest(req))
	if err != nil {
		t.Fatalf("create setup key: %v", err)
	}
	if resp.Msg.Key == "" {
		t.Fatal("created setup key has no plaintext")
	}
	return resp.Msg.Key
}

// Every kind of setup key joins, and each refusal carries its reason.
func TestJoinWithSetupKeys(t *testing.T) {
	h := controltest.NewHarness(t, 0)
	ctx := context.Background()
	if _, err := h.Admin.CreateGroup(ctx, connect.NewRequest(&adminv1.CreateGroupRequest{Name: "eng"})); err != nil {
		t.Fatal(err)
	}
	oneOff := createKey(t, h, &adminv1.CreateSetupKeyRequest{Name: "once", OneOff: true, AutoGroups: []string{"eng"}})
	limited := createKey(t, h, &adminv1.CreateSetupKeyRequest{Name: "twice", UsageLimit: 2})
	expiring := createKey(t, h, &adminv1.CreateSetupKeyRequest{Name: "soon", ExpiresInSeconds: 3600})
	revoked := createKey(t, h, &adminv1.CreateSetupKeyRequest{Name: "revoked"})
	ephemeral := createKey(t, h, &adminv1.CreateSetupKeyRequest{Name: "eph", Ephemeral: true})
	if _, err := h.Admin.UpdateSetupKey(ctx, connect.NewRequest(&adminv1.UpdateSetupKeyRequest{Id: "revoked", Revoked: ptr(true)})); err != nil {
		t.Fatal(err)
	}

	join := func(name, key string) error {
		return h.NewAgent(controltest.AgentOptions{Hostname: name}).Login(key)
	}
	mustJoin := func(name, key string) {
		t.Helper()
		if err := join(name, key); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
	mustRefuse := func(name, key string, want error, msg string) {
		t.Helper()
		err := join(name, key)
		if !errors.Is(err, want) || !errors.Is(err, controlclient.ErrSetupKeyInvalid) {
			t.Fatalf("%s: err = %v, want %v", name, err, want)
		}
		var re *controlclient.RefusedError
		if !errors.As(err, &re) || !strings.Contains(re.Message, msg) {
			t.Fatalf("%s: message %q does not say %q", name, err, msg)
		}
	}

	mustJoin("laptop", "") // reusable bootstrap key
	mustJoin("laptop", "") // same hostname: another DNS label
	mustJoin("once", oneOff)
	mustRefuse("once-again", oneOff, controlclient.ErrSetupKeyUsed, "one-off")
	mustJoin("lim1", limited)
	mustJoin("lim2", limited)
	mustRefuse("lim3", limited, controlclient.ErrSetupKeyLimit, "usage limit")
	mustJoin("early", expiring)
	h.Clock.Advance(2 * time.Hour)
	mustRefuse("late", expiring, controlclient.ErrSetupKeyExpired, "expired")
	mustRefuse("rev", revoked, controlclient.ErrSetupKeyRevoked, "revoked")
	mustRefuse("nokey", "NOT-A-KEY", controlclient.ErrSetupKeyUnknown, "no such key")
	mustJoin("eph", ephemeral)

	peers, err := h.Admin.ListPeers(ctx, connect.NewRequest(&adminv1.ListPeersRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]*adminv1.Peer{}
	var ips []string
	for _, p := range peers.Msg.Peers {
		byName[p.Name] = p
		ips = append(ips, p.OverlayIp)
	}
	wantNames := []string{"laptop", "laptop-2", "once", "lim1", "lim2", "early", "eph"}
	for _, n := range wantNames {
		if byName[n] == nil {
			t.Fatalf("no peer %s in %v", n, peers.Msg.Peers)
		}
	}
	if len(peers.Msg.Peers) != len(wantNames) {
		t.Fatalf("%d peers, want %d", len(peers.Msg.Peers), len(wantNames))
	}
	if byName["laptop"].OverlayIp != "100.64.0.1" || byName["laptop-2"].OverlayIp != "100.64.0.2" {
		t.Fatalf("addresses: %s %s", byName["laptop"].OverlayIp, byName["laptop-2"].OverlayIp)
	}
	if len(slices.Compact(slices.Sorted(slices.Values(ips)))) != len(ips) {
		t.Fatalf("duplicate addresses: %v", ips)
	}
	if !slices.Contains(byName["once"].Groups, "eng") || !byName["eph"].Ephemeral {
		t.Fatalf("auto group / ephemeral not applied: %v %v", byName["once"], byName["eph"])
	}
	keys, _ := h.Admin.ListSetupKeys(ctx, connect.NewRequest(&adminv1.ListSetupKeysRequest{}))
	states := map[string]string{}
	for _, k := range keys.Msg.SetupKeys {
		states[k.Name] = k.State
		if k.Key != "" {
			t.Fatalf("list shows the plaintext of %s", k.Name)
		}
	}
	want := map[string]string{"bootstrap": "valid", "once": "used up", "twice": "used up", "soon": "expired", "revoked": "revoked", "eph": "valid"}
	for k, s := range want {
		if states[k] != s {
			t.Errorf("key %s state %q, want %q", k, states[k], s)
		}
	}
}

func ptr[T any](v T) *T { return &v }

// A known peer logs in again without a key; an unknown one cannot.
func TestReloginAndUnknownPeer(t *testing.T) {
	h := controltest.NewHarness(t, 1)
	a := h.Agents[0]
	if err := a.LoginWith(""); err != nil {
		t.Fatalf("relogin without key: %v", err)
	}
	stranger := h.NewAgent(controltest.AgentOptions{Hostname: "stranger"})
	err := stranger.LoginWith("")
	if !errors.Is(err, controlclient.ErrPeerUnknown) || !strings.Contains(err.Error(), "run meshd up --setup-key") {
		t.Fatalf("unknown peer without key: %v", err)
	}
}

// A proof made with another key, for another purpose, or over a reused
// challenge is refused.
func TestKeyProofRefused(t *testing.T) {
	h := controltest.NewHarness(t, 0)
	ctx := context.Background()
	rpc := controlv1connect.NewControlServiceClient(h.HTTPClient(), h.URL)
	mine, _ := keys.Generate()
	other, _ := keys.Generate()
	challenge := func() ([]byte, keys.Key) {
		resp, err := rpc.Challenge(ctx, connect.NewRequest(&controlv1.ChallengeRequest{}))
		if err != nil {
			t.Fatal(err)
		}
		k, _ := keys.FromBytes(resp.Msg.ServerPublicKey)
		return resp.Msg.Challenge, k
	}
	login := func(pr *controlv1.Proof) error {
		_, err := rpc.Login(ctx, connect.NewRequest(&controlv1.LoginRequest{Proof: pr, SetupKey: h.Boot.SetupKey,
			Meta: &controlv1.PeerMeta{Hostname: "x"}}))
		return err
	}
	pub := mine.Public()
	cases := map[string]func() *controlv1.Proof{
		"wrong key": func() *controlv1.Proof {
			ch, srv := challenge()
			n, s := prove(t, seal.PurposeLogin, ch, srv, other) // claims mine, proves other
			return &controlv1.Proof{PublicKey: pub[:], Challenge: ch, Nonce: n[:], Sealed: s}
		},
		"wrong purpose": func() *controlv1.Proof {
			ch, srv := challenge()
			n, s := prove(t, seal.PurposeSignal, ch, srv, mine)
			return &controlv1.Proof{PublicKey: pub[:], Challenge: ch, Nonce: n[:], Sealed: s}
		},
		"forged challenge": func() *controlv1.Proof {
			_, srv := challenge()
			ch := make([]byte, 40)
			n, s := prove(t, seal.PurposeLogin, ch, srv, mine)
			return &controlv1.Proof{PublicKey: pub[:], Challenge: ch, Nonce: n[:], Sealed: s}
		},
	}
	for name, proof := range cases {
		err := login(proof())
		if connect.CodeOf(err) != connect.CodeUnauthenticated || !errors.Is(controlclientRefused(err), controlclient.ErrProofFailed) {
			t.Errorf("%s: err = %v", name, err)
		}
	}
	// A good proof works once; replaying its challenge does not.
	ch, srv := challenge()
	n, s := prove(t, seal.PurposeLogin, ch, srv, mine)
	good := &controlv1.Proof{PublicKey: pub[:], Challenge: ch, Nonce: n[:], Sealed: s}
	if err := login(good); err != nil {
		t.Fatalf("good proof: %v", err)
	}
	if err := login(good); !errors.Is(controlclientRefused(err), controlclient.ErrProofFailed) {
		t.Fatalf("replayed proof: %v", err)
	}
}

// prove is seal.Prove for keys the test made, which never fails.
func prove(tb testing.TB, purpose string, ch []byte, server keys.Key, priv keys.Private) ([seal.NonceLen]byte, []byte) {
	tb.Helper()
	n, s, err := seal.Prove(purpose, ch, server, priv)
	if err != nil {
		tb.Fatal(err)
	}
	return n, s
}
