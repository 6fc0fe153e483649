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
	var hashes int
	st2, _ := store.Open(ctx, filepath.Join(dir, "meshd.db"))
	st2.DB.QueryRow(`SELECT COUNT(*) FROM admin_tokens WHERE hash = ?`, []byte(first.AdminToken)).Scan(&hashes)
	st2.Close()
	if hashes != 0 {
		t.Fatal("admin token stored in plaintext")
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

// A revoked bootstrap key is replaced at the next start, and the join
// token then carries the new one.
func TestBootstrapReplacesRevokedKey(t *testing.T) {
	h := controltest.NewHarness(t, 0)
	old := h.Boot.SetupKey
	must[adminv1.SetupKey](t)(h.Admin.UpdateSetupKey(context.Background(), connect.NewRequest(&adminv1.UpdateSetupKeyRequest{
		Id: "bootstrap", Revoked: ptr(true)})))
	h.Restart()
	if h.Boot.SetupKey == old {
		t.Fatal("revoked bootstrap key kept")
	}
	h.AddAgent(controltest.AgentOptions{Hostname: "new"}) // joins with the new key
}
