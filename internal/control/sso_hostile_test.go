package control_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"connectrpc.com/connect"

	adminv1 "meshd/api/admin/v1"
	"meshd/internal/control/controltest"
	"meshd/internal/oidctest"
)

// A person controls their own email, name and (at some providers) groups:
// control characters and bidirectional overrides never reach terminals,
// the dashboard or the audit log; an oversized email is cut; a groups claim
// of thousands of entries (some repeated) syncs a bounded number of
// groups, each once.
func TestSSOHostileClaims(t *testing.T) {
	p := oidctest.New(t, oidctest.Options{})
	var groups []string
	for i := range 10000 {
		groups = append(groups, fmt.Sprintf("g%d", i%5000), "dup")
	}
	p.AddPerson(oidctest.Person{Subject: "eve", Email: "eve\x1b[2J@example.com" + strings.Repeat("x", 5000),
		Name: "Eve\u202egnp.exe\r\n", Groups: groups})
	h := ssoHarness(t, p, 0)
	a := h.NewAgent(controltest.AgentOptions{Hostname: "eve-laptop"})
	if err := a.LoginSSO(approveAs(p, "eve")); err != nil {
		t.Fatal(err)
	}
	users := must[adminv1.ListUsersResponse](t)(h.Admin.ListUsers(context.Background(), connect.NewRequest(&adminv1.ListUsersRequest{})))
	if len(users.Users) != 1 {
		t.Fatalf("users = %d", len(users.Users))
	}
	u := users.Users[0]
	if !strings.HasPrefix(u.Email, "eve[2J@example.com") || len(u.Email) > 256 || u.Name != "Evegnp.exe" {
		t.Fatalf("user email %q (%d bytes), name %q: want them printable and bounded", u.Email[:min(40, len(u.Email))], len(u.Email), u.Name)
	}
	gl := must[adminv1.ListGroupsResponse](t)(h.Admin.ListGroups(context.Background(), connect.NewRequest(&adminv1.ListGroupsRequest{})))
	names := map[string]int{}
	for _, g := range gl.Groups {
		names[g.Name]++
	}
	if len(gl.Groups) > 101 || names["dup"] != 1 {
		t.Fatalf("a 20,000-entry groups claim made %d groups (dup %d times); want at most 100 (+All), each once", len(gl.Groups), names["dup"])
	}
	peer := listPeers(t, h)["eve-laptop"]
	if strings.ContainsAny(peer.User, "\x1b\r\n\u202e") {
		t.Fatalf("peer's user %q carries control characters", peer.User)
	}
}
