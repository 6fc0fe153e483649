package control_test

import (
	"context"
	"errors"
	"testing"

	"connectrpc.com/connect"
	"golang.org/x/crypto/nacl/box"

	adminv1 "meshd/api/admin/v1"
	controlv1 "meshd/api/control/v1"
	"meshd/api/control/v1/controlv1connect"
	"meshd/internal/control/controltest"
	"meshd/internal/controlclient"
	"meshd/internal/keys"
	"meshd/internal/keys/keystest"
	"meshd/internal/seal"
)

// A key of small order makes the proof-of-key shared secret one that anyone
// can compute: the attacker "proves" such a key with a private key of its
// own. Login (with a valid setup key) and relogin must refuse every such
// key, and no peer may be created.
func TestLoginRefusesWeakKeys(t *testing.T) {
	h := controltest.NewHarness(t, 0)
	ctx := context.Background()
	rpc := controlv1connect.NewControlServiceClient(h.HTTPClient(), h.URL)
	attacker, _ := keys.Generate()
	forge := func(purpose string, weak keys.Key) *controlv1.Proof {
		resp, err := rpc.Challenge(ctx, connect.NewRequest(&controlv1.ChallengeRequest{}))
		if err != nil {
			t.Fatal(err)
		}
		var shared [32]byte
		box.Precompute(&shared, weak.Bytes(), attacker.Bytes())
		n := seal.Nonce()
		sealed := box.SealAfterPrecomputation(nil, append([]byte(purpose), resp.Msg.Challenge...), &n, &shared)
		return &controlv1.Proof{PublicKey: weak[:], Challenge: resp.Msg.Challenge, Nonce: n[:], Sealed: sealed}
	}
	for _, weak := range keystest.Weak() {
		for _, setupKey := range []string{h.Boot.SetupKey, ""} {
			_, err := rpc.Login(ctx, connect.NewRequest(&controlv1.LoginRequest{Proof: forge(seal.PurposeLogin, weak),
				SetupKey: setupKey, Meta: &controlv1.PeerMeta{Hostname: "mallory"}}))
			if connect.CodeOf(err) != connect.CodeUnauthenticated || !errors.Is(controlclientRefused(err), controlclient.ErrProofFailed) {
				t.Errorf("login as %x (setup key %t): err = %v, want proof failed", weak, setupKey != "", err)
			}
		}
	}
	peers, err := h.Admin.ListPeers(ctx, connect.NewRequest(&adminv1.ListPeersRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	if n := len(peers.Msg.Peers); n != 0 {
		t.Fatalf("%d peers registered with weak keys", n)
	}

	// An honest agent still joins.
	h.AddAgent(controltest.AgentOptions{Hostname: "honest"})
}
