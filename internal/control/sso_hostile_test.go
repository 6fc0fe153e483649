package control_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	adminv1 "meshd/api/admin/v1"
	controlv1 "meshd/api/control/v1"
	"meshd/api/control/v1/controlv1connect"
	"meshd/internal/control/controltest"
	"meshd/internal/keys"
	"meshd/internal/oidctest"
	"meshd/internal/seal"
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

// One address cannot take every pending-login slot: its ninth login
// waiting for approval is refused with a message that says why, so others
// can still log in.
func TestSSOPendingLoginsPerSource(t *testing.T) {
	p := oidctest.New(t, oidctest.Options{})
	h := ssoHarness(t, p, 0)
	ctx := context.Background()
	rpc := controlv1connect.NewControlServiceClient(h.HTTPClient(), h.URL)
	for i := range 8 {
		if _, err := rpc.StartSSOLogin(ctx, connect.NewRequest(&controlv1.StartSSOLoginRequest{})); err != nil {
			t.Fatalf("login %d: %v", i+1, err)
		}
	}
	_, err := rpc.StartSSOLogin(ctx, connect.NewRequest(&controlv1.StartSSOLoginRequest{}))
	if connect.CodeOf(err) != connect.CodeResourceExhausted || !strings.Contains(err.Error(), "from this address") {
		t.Fatalf("ninth pending login from one address: %v, want refused", err)
	}
}

// Someone who learned the handle of another's login and finishes it with
// their own key (or with none) gets nothing, and the login stays for the
// one who started it.
func TestSSOHandleOfAnotherKey(t *testing.T) {
	p := oidctest.New(t, oidctest.Options{})
	p.AddPerson(ann)
	h := ssoHarness(t, p, 0)
	ctx := context.Background()
	rpc := controlv1connect.NewControlServiceClient(h.HTTPClient(), h.URL)
	st := must[controlv1.StartSSOLoginResponse](t)(rpc.StartSSOLogin(ctx, connect.NewRequest(&controlv1.StartSSOLoginRequest{})))
	if err := p.Approve(st.UserCode, "ann"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(controltest.WaitTimeout)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !h.Service.SSOLoginDone(st.Handle) {
		if time.Now().After(deadline) {
			t.Fatal("control never collected the approval")
		}
		<-tick.C
	}
	thief, _ := keys.Generate()
	tpub := thief.Public()
	ch := must[controlv1.ChallengeResponse](t)(rpc.Challenge(ctx, connect.NewRequest(&controlv1.ChallengeRequest{})))
	srv, _ := keys.FromBytes(ch.ServerPublicKey)
	n, s := prove(t, seal.PurposeLogin, ch.Challenge, srv, thief)
	_, err := rpc.FinishSSOLogin(ctx, connect.NewRequest(&controlv1.FinishSSOLoginRequest{Handle: st.Handle,
		Proof: &controlv1.Proof{PublicKey: tpub[:], Challenge: ch.Challenge, Nonce: n[:], Sealed: s}}))
	if connect.CodeOf(err) != connect.CodeNotFound {
		t.Fatalf("another key finishing an admin login: %v, want unknown", err)
	}
	fin := must[controlv1.FinishSSOLoginResponse](t)(rpc.FinishSSOLogin(ctx, connect.NewRequest(&controlv1.FinishSSOLoginRequest{Handle: st.Handle})))
	if fin.Pending || fin.AdminToken == "" {
		t.Fatalf("the person's own finish after the thief's try: %+v", fin)
	}
}

// The provider going away while a person logs in ends the login with
// "cannot reach the identity provider", not a "login refused" that would
// send them looking for what they did wrong.
func TestSSOProviderDownDuringLogin(t *testing.T) {
	p := oidctest.New(t, oidctest.Options{})
	p.AddPerson(ann)
	h := ssoHarness(t, p, 0)
	ctx := context.Background()
	rpc := controlv1connect.NewControlServiceClient(h.HTTPClient(), h.URL)
	st := must[controlv1.StartSSOLoginResponse](t)(rpc.StartSSOLogin(ctx, connect.NewRequest(&controlv1.StartSSOLoginRequest{})))
	p.Close()
	deadline := time.Now().Add(controltest.WaitTimeout)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for !h.Service.SSOLoginDone(st.Handle) {
		if time.Now().After(deadline) {
			t.Fatal("the login never ended")
		}
		<-tick.C
	}
	_, err := rpc.FinishSSOLogin(ctx, connect.NewRequest(&controlv1.FinishSSOLoginRequest{Handle: st.Handle}))
	if connect.CodeOf(err) != connect.CodeUnavailable || !strings.Contains(err.Error(), "cannot reach the identity provider") {
		t.Fatalf("login with the provider gone: %v", err)
	}
}

// A browser login without a machine's key is refused: whoever sent an
// owner its link would collect the owner's admin session with the handle.
func TestSSOBrowserAdminLoginRefused(t *testing.T) {
	p := oidctest.New(t, oidctest.Options{})
	h := ssoHarness(t, p, 0)
	rpc := controlv1connect.NewControlServiceClient(h.HTTPClient(), h.URL)
	_, err := rpc.StartSSOLogin(context.Background(), connect.NewRequest(&controlv1.StartSSOLoginRequest{Browser: true}))
	if connect.CodeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), "meshd admin login") {
		t.Fatalf("keyless browser login: %v, want refused", err)
	}
}

// IdP groups named like a hand-made group (or like All) leave those groups
// alone: the person's peer is not put in them, they stay editable by hand,
// and no second group of that name appears; a hand-made group cannot take
// the name of an IdP group either.
func TestSSOGroupNameCollisions(t *testing.T) {
	p := oidctest.New(t, oidctest.Options{})
	p.AddPerson(oidctest.Person{Subject: "zed", Email: "zed@example.com", Groups: []string{"ops", "All", "eng"}})
	h := ssoHarness(t, p, 0)
	ctx := context.Background()
	must[adminv1.Group](t)(h.Admin.CreateGroup(ctx, connect.NewRequest(&adminv1.CreateGroupRequest{Name: "ops"})))
	a := h.NewAgent(controltest.AgentOptions{Hostname: "zed-pc"})
	if err := a.LoginSSO(approveAs(p, "zed")); err != nil {
		t.Fatal(err)
	}
	gl := must[adminv1.ListGroupsResponse](t)(h.Admin.ListGroups(ctx, connect.NewRequest(&adminv1.ListGroupsRequest{})))
	byName := map[string]*adminv1.Group{}
	for _, g := range gl.Groups {
		if byName[g.Name] != nil {
			t.Fatalf("two groups named %q", g.Name)
		}
		byName[g.Name] = g
	}
	if g := byName["ops"]; g == nil || g.IdpManaged || len(g.Peers) != 0 {
		t.Fatalf("hand-made ops after an IdP ops: %+v", g)
	}
	if g := byName["All"]; g == nil || g.IdpManaged {
		t.Fatalf("All after an IdP All: %+v", g)
	}
	if g := byName["eng"]; g == nil || !g.IdpManaged || len(g.Peers) != 1 || g.Peers[0] != "zed-pc" {
		t.Fatalf("IdP eng: %+v", g)
	}
	if _, err := h.Admin.UpdateGroup(ctx, connect.NewRequest(&adminv1.UpdateGroupRequest{Id: "ops", Peers: &adminv1.StringList{Values: []string{"zed-pc"}}})); err != nil {
		t.Fatalf("hand edit of the hand-made ops: %v", err)
	}
	if _, err := h.Admin.UpdateGroup(ctx, connect.NewRequest(&adminv1.UpdateGroupRequest{Id: "eng", Peers: &adminv1.StringList{Values: []string{}}})); connect.CodeOf(err) != connect.CodeFailedPrecondition && connect.CodeOf(err) != connect.CodeAlreadyExists && connect.CodeOf(err) != connect.CodeAborted {
		t.Fatalf("hand edit of the IdP eng: %v, want refused", err)
	}
	if _, err := h.Admin.CreateGroup(ctx, connect.NewRequest(&adminv1.CreateGroupRequest{Name: "eng"})); err == nil {
		t.Fatal("a hand-made group took the name of an IdP group")
	}
}
