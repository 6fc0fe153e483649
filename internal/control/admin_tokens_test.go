package control_test

import (
	"context"
	"slices"
	"strings"
	"testing"

	"connectrpc.com/connect"

	adminv1 "meshd/api/admin/v1"
	"meshd/internal/control/controltest"
)

// An admin token made through the API works at once, acts under its own
// name in the audit log, survives a restart, and stops working when
// deleted; the account's last token cannot be deleted.
func TestAdminTokens(t *testing.T) {
	h := controltest.NewHarness(t, 0)
	ctx := context.Background()

	made := must[adminv1.AdminToken](t)(h.Admin.CreateAdminToken(ctx, connect.NewRequest(&adminv1.CreateAdminTokenRequest{Name: "ci"})))
	if !strings.HasPrefix(made.Token, "mat_") || made.Name != "ci" {
		t.Fatalf("created = %v", made)
	}
	_, err := h.Admin.CreateAdminToken(ctx, connect.NewRequest(&adminv1.CreateAdminTokenRequest{Name: "CI"}))
	wantCode(t, err, connect.CodeFailedPrecondition, "exists already")
	_, err = h.Admin.CreateAdminToken(ctx, connect.NewRequest(&adminv1.CreateAdminTokenRequest{Name: " "}))
	wantCode(t, err, connect.CodeInvalidArgument, "empty")

	h.Restart()
	ci := h.AdminClient(made.Token)
	list := must[adminv1.ListAdminTokensResponse](t)(ci.ListAdminTokens(ctx, connect.NewRequest(&adminv1.ListAdminTokensRequest{})))
	var names []string
	for _, tok := range list.AdminTokens {
		if tok.Token != "" {
			t.Fatalf("list shows a token's value: %v", tok)
		}
		if tok.Current {
			names = append(names, tok.Name+"*")
		} else {
			names = append(names, tok.Name)
		}
	}
	if want := []string{"bootstrap", "ci*"}; !slices.Equal(names, want) {
		t.Fatalf("tokens = %q, want %q (* = the caller's)", names, want)
	}

	must[adminv1.Group](t)(ci.CreateGroup(ctx, connect.NewRequest(&adminv1.CreateGroupRequest{Name: "eng"})))
	must[adminv1.DeleteAdminTokenResponse](t)(ci.DeleteAdminToken(ctx, connect.NewRequest(&adminv1.DeleteAdminTokenRequest{Id: "bootstrap"})))
	_, err = h.Admin.ListPeers(ctx, connect.NewRequest(&adminv1.ListPeersRequest{}))
	wantCode(t, err, connect.CodeUnauthenticated, "admin token not accepted")
	_, err = ci.DeleteAdminToken(ctx, connect.NewRequest(&adminv1.DeleteAdminTokenRequest{Id: made.Id}))
	wantCode(t, err, connect.CodeFailedPrecondition, "last one")
	_, err = ci.DeleteAdminToken(ctx, connect.NewRequest(&adminv1.DeleteAdminTokenRequest{Id: "nosuch"}))
	wantCode(t, err, connect.CodeNotFound, "no admin token")

	h.Restart()
	_, err = h.Admin.ListPeers(ctx, connect.NewRequest(&adminv1.ListPeersRequest{}))
	wantCode(t, err, connect.CodeUnauthenticated, "admin token not accepted")
	evs := must[adminv1.ListEventsResponse](t)(ci.ListEvents(ctx, connect.NewRequest(&adminv1.ListEventsRequest{})))
	var got []string
	for _, e := range evs.Events {
		if strings.HasPrefix(e.Actor, "admin:") {
			got = append(got, e.Actor+" "+e.Action+" "+e.TargetName)
		}
	}
	want := []string{"admin:bootstrap admin_token.created ci", "admin:ci group.created eng", "admin:ci admin_token.deleted bootstrap"}
	if !slices.Equal(got, want) {
		t.Fatalf("admin events = %q, want %q", got, want)
	}
}
