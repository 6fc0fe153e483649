package control_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/emptypb"

	adminv1 "meshd/api/admin/v1"
	controlv1 "meshd/api/control/v1"
	"meshd/api/control/v1/controlv1connect"
	"meshd/internal/control/controltest"
	"meshd/internal/oidctest"
)

// adminLogin logs subject in as an admin through the device flow (as
// `meshd admin login` does) and returns an admin client with the session.
func adminLogin(t *testing.T, h *controltest.Harness, p *oidctest.Provider, subject string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), controltest.WaitTimeout)
	defer cancel()
	rpc := controlv1connect.NewControlServiceClient(h.HTTPClient(), h.URL)
	st, err := rpc.StartSSOLogin(ctx, connect.NewRequest(&controlv1.StartSSOLoginRequest{}))
	if err != nil {
		return "", err
	}
	if err := p.Approve(st.Msg.UserCode, subject); err != nil {
		return "", err
	}
	for range 100 {
		fin, err := rpc.FinishSSOLogin(ctx, connect.NewRequest(&controlv1.FinishSSOLoginRequest{Handle: st.Msg.Handle}))
		if err != nil {
			return "", err
		}
		if !fin.Msg.Pending {
			return fin.Msg.AdminToken, nil
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(100 * time.Millisecond): // the provider's poll interval is a second
		}
	}
	return "", errors.New("admin login still pending")
}

// Every role against every admin method: owners and admins may call all,
// auditors only reads, users only the peer methods (and those only on
// their own peers).
func TestSSORolesEveryMethod(t *testing.T) {
	p := oidctest.New(t, oidctest.Options{})
	people := map[string]oidctest.Person{}
	for _, role := range []string{"owner", "admin", "auditor", "user"} {
		x := oidctest.Person{Subject: role + "-person", Email: role + "@example.com"}
		people[role] = x
		p.AddPerson(x)
	}
	h := ssoHarness(t, p, 1)
	ctx := context.Background()
	tokens := map[string]string{}
	for _, role := range []string{"owner", "admin", "auditor", "user"} { // the first one to log in owns the account
		tok, err := adminLogin(t, h, p, people[role].Subject)
		if err != nil {
			t.Fatalf("%s: admin login: %v", role, err)
		}
		tokens[role] = tok
		if role != "owner" {
			must[adminv1.User](t)(h.Admin.UpdateUser(ctx, connect.NewRequest(&adminv1.UpdateUserRequest{Id: people[role].Email, Role: ptr(role)})))
		}
	}
	methods := adminv1.File_api_admin_v1_admin_proto.Services().ByName("AdminService").Methods()
	if methods.Len() < 40 {
		t.Fatalf("%d admin methods: the descriptor is not the one expected", methods.Len())
	}
	read := func(m string) bool {
		return strings.HasPrefix(m, "List") || strings.HasPrefix(m, "Get") || m == "CheckAccess"
	}
	userMay := map[string]bool{"ListPeers": true, "GetPeer": true, "UpdatePeer": true, "DeletePeer": true}
	for role, tok := range tokens {
		for i := range methods.Len() {
			m := string(methods.Get(i).Name())
			// An empty message decodes as any request type; the answer's
			// fields are ignored.
			c := connect.NewClient[emptypb.Empty, emptypb.Empty](h.HTTPClient(), h.URL+"/meshd.admin.v1.AdminService/"+m,
				connect.WithInterceptors(controltest.BearerToken(tok)))
			_, err := c.CallUnary(ctx, connect.NewRequest(&emptypb.Empty{}))
			gotDenied := connect.CodeOf(err) == connect.CodePermissionDenied
			wantDenied := (role == "auditor" && !read(m)) || (role == "user" && !userMay[m])
			if gotDenied != wantDenied {
				t.Errorf("%s calling %s: %v, want denied=%v", role, m, err, wantDenied)
			}
			if connect.CodeOf(err) == connect.CodeUnauthenticated {
				t.Errorf("%s calling %s: session not accepted: %v", role, m, err)
			}
		}
	}

	// A user sees and manages only their own peers.
	user := h.AdminClient(tokens["user"])
	own := h.NewAgent(controltest.AgentOptions{Hostname: "users-laptop"})
	if err := own.LoginSSO(approveAs(p, people["user"].Subject)); err != nil {
		t.Fatal(err)
	}
	l, err := user.ListPeers(ctx, connect.NewRequest(&adminv1.ListPeersRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Msg.Peers) != 1 || l.Msg.Peers[0].Name != "users-laptop" {
		t.Fatalf("user lists %v, want only their own peer", l.Msg.Peers)
	}
	if _, err := user.GetPeer(ctx, connect.NewRequest(&adminv1.GetPeerRequest{Id: "agent-0"})); connect.CodeOf(err) != connect.CodeNotFound {
		t.Fatalf("user reading another's peer: %v", err)
	}
	if _, err := user.DeletePeer(ctx, connect.NewRequest(&adminv1.DeletePeerRequest{Id: "agent-0"})); connect.CodeOf(err) != connect.CodeNotFound {
		t.Fatalf("user deleting another's peer: %v", err)
	}
	_, err = user.UpdatePeer(ctx, connect.NewRequest(&adminv1.UpdatePeerRequest{Id: "users-laptop", Groups: &adminv1.StringList{Values: []string{"All"}}}))
	if connect.CodeOf(err) != connect.CodePermissionDenied {
		t.Fatalf("user changing their peer's groups: %v", err)
	}
	if _, err := user.UpdatePeer(ctx, connect.NewRequest(&adminv1.UpdatePeerRequest{Id: "users-laptop", Name: ptr("mine")})); err != nil {
		t.Fatalf("user renaming their own peer: %v", err)
	}

	// Blocking the auditor ends their session at once.
	must[adminv1.User](t)(h.Admin.UpdateUser(ctx, connect.NewRequest(&adminv1.UpdateUserRequest{Id: "auditor@example.com", Blocked: ptr(true)})))
	if _, err := h.AdminClient(tokens["auditor"]).ListPeers(ctx, connect.NewRequest(&adminv1.ListPeersRequest{})); connect.CodeOf(err) != connect.CodeUnauthenticated {
		t.Fatalf("blocked auditor: %v", err)
	}
	// Sessions expire.
	h.Clock.Advance(13 * time.Hour)
	if _, err := h.AdminClient(tokens["owner"]).ListPeers(ctx, connect.NewRequest(&adminv1.ListPeersRequest{})); connect.CodeOf(err) != connect.CodeUnauthenticated {
		t.Fatalf("expired session: %v", err)
	}
}

// The provider's groups claim keeps meshd groups: created at login, marked
// IdP-managed (not editable by hand), usable in policies, and membership
// follows the claim at the next login.
func TestSSOGroupsFeedPolicy(t *testing.T) {
	p := oidctest.New(t, oidctest.Options{})
	p.AddPerson(ann) // in eng
	p.AddPerson(bob) // in no group
	h := ssoHarness(t, p, 1)
	ctx := context.Background()
	annPC := h.NewAgent(controltest.AgentOptions{Hostname: "ann-pc"})
	if err := annPC.LoginSSO(approveAs(p, "ann")); err != nil {
		t.Fatal(err)
	}
	bobPC := h.NewAgent(controltest.AgentOptions{Hostname: "bob-pc"})
	if err := bobPC.LoginSSO(approveAs(p, "bob")); err != nil {
		t.Fatal(err)
	}
	g := must[adminv1.Group](t)(h.Admin.GetGroup(ctx, connect.NewRequest(&adminv1.GetGroupRequest{Id: "eng"})))
	if !g.IdpManaged || !slices.Equal(g.Peers, []string{"ann-pc"}) {
		t.Fatalf("IdP group = %+v", g)
	}
	if _, err := h.Admin.UpdateGroup(ctx, connect.NewRequest(&adminv1.UpdateGroupRequest{Id: "eng", Name: ptr("x")})); connect.CodeOf(err) != connect.CodeFailedPrecondition {
		t.Fatalf("hand edit of an IdP group: %v", err)
	}
	if _, err := h.Admin.DeleteGroup(ctx, connect.NewRequest(&adminv1.DeleteGroupRequest{Id: "eng"})); connect.CodeOf(err) != connect.CodeFailedPrecondition {
		t.Fatalf("hand delete of an IdP group: %v", err)
	}
	_, err := h.Admin.UpdatePeer(ctx, connect.NewRequest(&adminv1.UpdatePeerRequest{Id: "bob-pc", Groups: &adminv1.StringList{Values: []string{"eng"}}}))
	if connect.CodeOf(err) != connect.CodeFailedPrecondition {
		t.Fatalf("hand edit of a peer's IdP group membership: %v", err)
	}
	// Only eng reaches the server.
	must[adminv1.Group](t)(h.Admin.CreateGroup(ctx, connect.NewRequest(&adminv1.CreateGroupRequest{Name: "servers", Peers: []string{"agent-0"}})))
	must[adminv1.Policy](t)(h.Admin.CreatePolicy(ctx, connect.NewRequest(&adminv1.CreatePolicyRequest{Name: "eng-servers",
		Sources: []string{"eng"}, Destinations: []string{"servers"}})))
	pols := must[adminv1.ListPoliciesResponse](t)(h.Admin.ListPolicies(ctx, connect.NewRequest(&adminv1.ListPoliciesRequest{})))
	for _, pol := range pols.Policies {
		if pol.Name != "eng-servers" {
			must[adminv1.DeletePolicyResponse](t)(h.Admin.DeletePolicy(ctx, connect.NewRequest(&adminv1.DeletePolicyRequest{Id: pol.Id})))
		}
	}
	h.Agents[0].WaitFor(t, "eng only", func(m *controltest.Map) bool { return sees(m, "ann-pc") && !sees(m, "bob-pc") })

	// Bob joins eng at the provider: his next login puts his peer in it.
	bob2 := bob
	bob2.Groups = []string{"eng"}
	p.AddPerson(bob2)
	if err := bobPC.LoginSSO(approveAs(p, "bob")); err != nil {
		t.Fatal(err)
	}
	h.Agents[0].WaitFor(t, "bob in eng", func(m *controltest.Map) bool { return sees(m, "ann-pc") && sees(m, "bob-pc") })
	// Ann leaves it.
	ann2 := ann
	ann2.Groups = nil
	p.AddPerson(ann2)
	if err := annPC.LoginSSO(approveAs(p, "ann")); err != nil {
		t.Fatal(err)
	}
	h.Agents[0].WaitFor(t, "ann out of eng", func(m *controltest.Map) bool { return !sees(m, "ann-pc") && sees(m, "bob-pc") })
}

// Logins waiting for approval are bounded: each polls the provider, and
// anyone who reaches control can start one.
func TestSSOPendingLoginsBounded(t *testing.T) {
	p := oidctest.New(t, oidctest.Options{})
	h := ssoHarness(t, p, 0)
	ctx := context.Background()
	var err error
	n := 0
	for ; n < 1000 && err == nil; n++ { // from many addresses: one gets only a few
		_, _, err = h.Service.StartWebLogin(ctx, "https://dashboard.example/sso/done", fmt.Sprintf("10.0.%d.%d:4000", n/250, n%250))
	}
	if connect.CodeOf(err) != connect.CodeResourceExhausted || n != 257 || !strings.Contains(err.Error(), "too many SSO logins") {
		t.Fatalf("login %d: %v, want resource exhausted at the 257th", n, err)
	}
}
