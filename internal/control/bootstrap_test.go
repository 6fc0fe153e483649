package control_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"connectrpc.com/connect"
	"go.uber.org/zap/zaptest"

	adminv1 "meshd/api/admin/v1"
	"meshd/internal/control"
	"meshd/internal/control/controltest"
	"meshd/internal/jointoken"
	"meshd/store"
)

func openService(t *testing.T, dir string) (*control.Service, *store.Store) {
	t.Helper()
	st, err := store.Open(context.Background(), filepath.Join(dir, "meshd.db"))
	if err != nil {
		t.Fatal(err)
	}
	svc, err := control.New(context.Background(), control.Options{Store: st, Log: zaptest.NewLogger(t),
		PublicURL: "https://vpn.example.org:443", TLSPin: "sha256:" + strings.Repeat("ab", 32)})
	if err != nil {
		t.Fatal(err)
	}
	return svc, st
}

// The first start creates the account, the admin token and the setup key;
// later starts reuse them; a revoked bootstrap key is replaced.
func TestBootstrap(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	svc, st := openService(t, dir)
	first, err := svc.Bootstrap(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	secret := svc.TURNSecret()
	svc.Close()
	st.Close()
	if !first.Created || !strings.HasPrefix(first.JoinCommand, "meshd agent --join meshd1_") {
		t.Fatalf("first start: %+v", first)
	}
	for _, f := range []string{control.AdminTokenFile, control.JoinTokenFile} {
		fi, err := os.Stat(filepath.Join(dir, f))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v mode %v", f, err, fi.Mode())
		}
	}
	tok, _ := os.ReadFile(filepath.Join(dir, control.AdminTokenFile))
	if strings.TrimSpace(string(tok)) != first.AdminToken {
		t.Fatal("admin-token file does not hold the admin token")
	}
	jt, err := jointoken.Decode(first.JoinToken)
	if err != nil || jt.ControlURL != "https://vpn.example.org:443" || jt.Pin == "" || jt.SetupKey != first.SetupKey {
		t.Fatalf("join token = %+v, %v", jt, err)
	}
	st2, err := store.Open(ctx, filepath.Join(dir, "meshd.db"))
	if err != nil {
		t.Fatal(err)
	}
	toks, err := st2.AdminTokens(ctx)
	st2.Close()
	if err != nil || len(toks) == 0 {
		t.Fatalf("admin tokens = %v, %v", toks, err)
	}
	for _, tok := range toks {
		if string(tok.Hash) == first.AdminToken {
			t.Fatal("admin token stored in plaintext")
		}
	}

	svc, st = openService(t, dir)
	second, err := svc.Bootstrap(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	if second.Created || second.AdminToken != first.AdminToken || second.JoinToken != first.JoinToken ||
		second.AccountID != first.AccountID || string(svc.TURNSecret()) != string(secret) {
		t.Fatalf("later start did not reuse: %+v vs %+v", second, first)
	}
	svc.Close()
	st.Close()
}

// The bootstrap key is made once: revoked, it stays revoked across
// restarts, no second key appears, and the start gives a hint instead of
// the join line. Un-revoked, the join line is back.
func TestBootstrapKeyRevokedStaysRevoked(t *testing.T) {
	h := controltest.NewHarness(t, 0)
	ctx := context.Background()
	must[adminv1.SetupKey](t)(h.Admin.UpdateSetupKey(ctx, connect.NewRequest(&adminv1.UpdateSetupKeyRequest{
		Id: "bootstrap", Revoked: ptr(true)})))
	for range 2 {
		h.Restart()
		if h.Boot.JoinCommand != "" || h.Boot.SetupKey != "" {
			t.Fatalf("join line for a revoked bootstrap key: %+v", h.Boot)
		}
		if !strings.Contains(h.Boot.Hint, "revoked") || !strings.Contains(h.Boot.Hint, "setup-keys create") {
			t.Fatalf("hint = %q: want why and how to make a key", h.Boot.Hint)
		}
		keys := must[adminv1.ListSetupKeysResponse](t)(h.Admin.ListSetupKeys(ctx, connect.NewRequest(&adminv1.ListSetupKeysRequest{})))
		if len(keys.SetupKeys) != 1 {
			t.Fatalf("%d setup keys after restarts, want the one bootstrap key", len(keys.SetupKeys))
		}
	}
	// The join token file keeps control's address for `meshd admin --data`.
	b, err := os.ReadFile(filepath.Join(h.Dir, control.JoinTokenFile))
	if jt, derr := jointoken.Decode(string(b)); err != nil || derr != nil || jt.ControlURL != h.URL {
		t.Fatalf("join token file: %v %v %+v", err, derr, jt)
	}

	must[adminv1.SetupKey](t)(h.Admin.UpdateSetupKey(ctx, connect.NewRequest(&adminv1.UpdateSetupKeyRequest{
		Id: "bootstrap", Revoked: ptr(false)})))
	h.Restart()
	if h.Boot.JoinCommand == "" || h.Boot.Hint != "" {
		t.Fatalf("valid bootstrap key but no join line: %+v", h.Boot)
	}
	h.AddAgent(controltest.AgentOptions{Hostname: "new"})

	// A deleted key is not replaced either.
	must[adminv1.DeleteSetupKeyResponse](t)(h.Admin.DeleteSetupKey(ctx, connect.NewRequest(&adminv1.DeleteSetupKeyRequest{Id: "bootstrap"})))
	h.Restart()
	if h.Boot.JoinCommand != "" || !strings.Contains(h.Boot.Hint, "deleted") {
		t.Fatalf("deleted bootstrap key: %+v", h.Boot)
	}
	keys := must[adminv1.ListSetupKeysResponse](t)(h.Admin.ListSetupKeys(ctx, connect.NewRequest(&adminv1.ListSetupKeysRequest{})))
	if len(keys.SetupKeys) != 0 {
		t.Fatalf("a deleted bootstrap key came back: %v", keys.SetupKeys)
	}
}
