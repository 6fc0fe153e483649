package admin

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"meshd/internal/control"
	"meshd/internal/control/controltest"
	"meshd/internal/oidctest"
)

// `meshd admin login` keeps a session (0600) that later commands use
// without a token; `users` lists, updates, blocks and deletes users, in
// JSON with the documented fields; the session's role is enforced.
func TestAdminLoginAndUsers(t *testing.T) {
	p := oidctest.New(t, oidctest.Options{})
	p.AddPerson(oidctest.Person{Subject: "ann", Email: "ann@example.com", Name: "Ann"})
	p.AddPerson(oidctest.Person{Subject: "bob", Email: "bob@example.com", Name: "Bob"})
	h := controltest.NewHarness(t, 1, controltest.WithOptions(func(o *control.Options) {
		o.OIDC = control.OIDCOptions{Issuer: p.Issuer, ClientID: "meshd"}
	}))
	cfg := t.TempDir()
	t.Setenv("MESHD_CONFIG_DIR", cfg)
	login := func(subject string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), controltest.WaitTimeout)
		defer cancel()
		approved := make(chan error, 1)
		go func() {
			code, err := p.WaitCode(ctx)
			if err == nil {
				err = p.Approve(code, subject)
			}
			approved <- err
		}()
		out, code, msg := runAdmin(t, h, "login", "--control", h.URL)
		if err := <-approved; err != nil {
			t.Fatal(err)
		}
		if code != 0 || !strings.Contains(out, "enter ") || !strings.Contains(out, "logged in as "+subject+"@example.com") {
			t.Fatalf("admin login: exit %d %s\n%s", code, msg, out)
		}
		return out
	}
	login("ann") // the first user: owner
	fi, err := os.Stat(filepath.Join(cfg, "admin-session.json"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("session file: %v, mode %v", err, fi.Mode())
	}
	login("bob")
	// Bob's session: a user may not list users.
	if _, code, msg := runAdmin(t, h, "users", "list"); code != 1 || !strings.Contains(msg, "role user may not call ListUsers") {
		t.Fatalf("users list as a user: exit %d %s", code, msg)
	}
	out := ok(t, h, "users", "list", "--json")
	var users []map[string]any
	if err := json.Unmarshal([]byte(out), &users); err != nil || len(users) != 2 {
		t.Fatalf("users list --json: %v\n%s", err, out)
	}
	for _, f := range []string{"id", "issuer", "subject", "email", "name", "role"} {
		if _, ok := users[0][f]; !ok {
			t.Errorf("users list --json lacks %q: %v", f, users[0])
		}
	}
	if users[0]["role"] != "owner" || users[1]["role"] != "user" {
		t.Fatalf("roles: %v, %v", users[0]["role"], users[1]["role"])
	}
	if out := ok(t, h, "users", "update", "bob@example.com", "--role", "auditor", "--json"); !strings.Contains(out, `"role":"auditor"`) {
		t.Fatalf("users update:\n%s", out)
	}
	// Now bob's session reads everything.
	if out, code, msg := runAdmin(t, h, "users", "get", "ann"); code != 0 || !strings.Contains(out, "owner") {
		t.Fatalf("users get as an auditor: exit %d %s\n%s", code, msg, out)
	}
	if out := ok(t, h, "users", "block", "bob", "--json"); !strings.Contains(out, `"blocked":true`) {
		t.Fatalf("users block:\n%s", out)
	}
	if _, code, msg := runAdmin(t, h, "users", "list"); code != 1 || !strings.Contains(msg, "blocked") {
		t.Fatalf("blocked user's session: exit %d %s", code, msg)
	}
	ok(t, h, "users", "unblock", "bob")
	ok(t, h, "users", "delete", "bob")
	if out := ok(t, h, "users", "list"); strings.Contains(out, "bob@") {
		t.Fatalf("deleted user listed:\n%s", out)
	}
}
