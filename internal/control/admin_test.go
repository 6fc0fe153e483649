package control_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"

	"connectrpc.com/connect"

	adminv1 "meshd/api/admin/v1"
	"meshd/internal/control/controltest"
)

func wantCode(t *testing.T, err error, code connect.Code, msg string) {
	t.Helper()
	if connect.CodeOf(err) != code || !strings.Contains(err.Error(), msg) {
		t.Fatalf("err = %v, want %v containing %q", err, code, msg)
	}
}

func TestAdminRefusesBadInput(t *testing.T) {
	h := controltest.NewHarness(t, 1)
	ctx := context.Background()

	_, err := h.AdminClient("mat_wrong").ListPeers(ctx, connect.NewRequest(&adminv1.ListPeersRequest{}))
	wantCode(t, err, connect.CodeUnauthenticated, "admin token not accepted")

	_, err = h.Admin.CreatePolicy(ctx, connect.NewRequest(&adminv1.CreatePolicyRequest{Name: "web",
		Sources: []string{"eng"}, Destinations: []string{"All"}}))
	wantCode(t, err, connect.CodeNotFound, `no group "eng"`)

	_, err = h.Admin.CreatePolicy(ctx, connect.NewRequest(&adminv1.CreatePolicyRequest{Name: "web",
		Sources: []string{"All"}, Destinations: []string{"All"}, Protocol: "icmp", Ports: []string{"80"}}))
	wantCode(t, err, connect.CodeInvalidArgument, "only tcp and udp")

	_, err = h.Admin.CreateRoute(ctx, connect.NewRequest(&adminv1.CreateRouteRequest{Network: "10.0.0.300/8", Peers: []string{"agent-0"}}))
	wantCode(t, err, connect.CodeInvalidArgument, "not a CIDR")

	_, err = h.Admin.CreateRoute(ctx, connect.NewRequest(&adminv1.CreateRouteRequest{Network: "10.0.0.0/8", Peers: []string{"ghost"}}))
	wantCode(t, err, connect.CodeNotFound, `no peer "ghost"`)

	must[adminv1.Group](t)(h.Admin.CreateGroup(ctx, connect.NewRequest(&adminv1.CreateGroupRequest{Name: "eng"})))
	_, err = h.Admin.CreateGroup(ctx, connect.NewRequest(&adminv1.CreateGroupRequest{Name: "ENG"}))
	wantCode(t, err, connect.CodeFailedPrecondition, "exists already")

	must[adminv1.Policy](t)(h.Admin.CreatePolicy(ctx, connect.NewRequest(&adminv1.CreatePolicyRequest{Name: "web",
		Sources: []string{"eng"}, Destinations: []string{"All"}})))
	_, err = h.Admin.DeleteGroup(ctx, connect.NewRequest(&adminv1.DeleteGroupRequest{Id: "eng"}))
	wantCode(t, err, connect.CodeFailedPrecondition, "used by policy web")

	_, err = h.Admin.DeleteGroup(ctx, connect.NewRequest(&adminv1.DeleteGroupRequest{Id: "All"}))
	wantCode(t, err, connect.CodeFailedPrecondition, "cannot be deleted")

	_, err = h.Admin.UpdateAccount(ctx, connect.NewRequest(&adminv1.UpdateAccountRequest{OverlayNetwork: ptr("10.9.0.0/24")}))
	wantCode(t, err, connect.CodeFailedPrecondition, "does not contain")
	acct := must[adminv1.Account](t)(h.Admin.UpdateAccount(ctx, connect.NewRequest(&adminv1.UpdateAccountRequest{OverlayNetwork: ptr("100.64.0.0/15")})))
	if acct.OverlayNetwork != "100.64.0.0/15" {
		t.Fatalf("account = %v", acct)
	}

	_, err = h.Admin.CreateDNSRecord(ctx, connect.NewRequest(&adminv1.CreateDNSRecordRequest{Name: "nas", Type: "A", Value: "::1"}))
	wantCode(t, err, connect.CodeInvalidArgument, "IPv4")
	_, err = h.Admin.CreateNameserverGroup(ctx, connect.NewRequest(&adminv1.CreateNameserverGroupRequest{Name: "x", Nameservers: []string{"dns.google"}}))
	wantCode(t, err, connect.CodeInvalidArgument, "IP address")
	_, err = h.Admin.CreateSetupKey(ctx, connect.NewRequest(&adminv1.CreateSetupKeyRequest{OneOff: true, UsageLimit: 5}))
	wantCode(t, err, connect.CodeInvalidArgument, "one-off")
}

// Renaming a peer and changing its groups shows in the other peers' maps;
// every change is in the audit log with its actor.
func TestAdminEditsPeersAndAudits(t *testing.T) {
	h := controltest.NewHarness(t, 2)
	ctx := context.Background()
	must[adminv1.Group](t)(h.Admin.CreateGroup(ctx, connect.NewRequest(&adminv1.CreateGroupRequest{Name: "servers"})))
	p := must[adminv1.Peer](t)(h.Admin.UpdatePeer(ctx, connect.NewRequest(&adminv1.UpdatePeerRequest{Id: "agent-1",
		Name: ptr("DB Server"), Groups: &adminv1.StringList{Values: []string{"servers"}}})))
	if p.DnsName != "db-server.meshd.internal" || !slices.Equal(p.Groups, []string{"All", "servers"}) {
		t.Fatalf("peer = %v", p)
	}
	h.Agents[0].WaitFor(t, "renamed peer", func(m *controltest.Map) bool {
		return len(m.Peers) == 1 && m.Peers[0].Name == "DB Server" && m.Peers[0].DnsName == "db-server.meshd.internal"
	})
	_, err := h.Admin.UpdatePeer(ctx, connect.NewRequest(&adminv1.UpdatePeerRequest{Id: "agent-0", Name: ptr("db-server")}))
	wantCode(t, err, connect.CodeFailedPrecondition, "taken")
	g := must[adminv1.Group](t)(h.Admin.GetGroup(ctx, connect.NewRequest(&adminv1.GetGroupRequest{Id: "servers"})))
	if !slices.Equal(g.Peers, []string{"DB Server"}) {
		t.Fatalf("group = %v", g)
	}
	evs := must[adminv1.ListEventsResponse](t)(h.Admin.ListEvents(ctx, connect.NewRequest(&adminv1.ListEventsRequest{})))
	var got []string
	for _, e := range evs.Events {
		if strings.HasPrefix(e.Actor, "admin:") {
			got = append(got, e.Actor+" "+e.Action+" "+e.TargetName)
		}
	}
	want := []string{"admin:bootstrap group.created servers", "admin:bootstrap peer.updated DB Server"}
	if !slices.Equal(got, want) {
		t.Fatalf("admin events = %q, want %q", got, want)
	}
}

// The admin API answers plain JSON over HTTP, as curl sends it.
func TestAdminAPIOverJSON(t *testing.T) {
	h := controltest.NewHarness(t, 1)
	req, _ := http.NewRequest("POST", h.URL+"/meshd.admin.v1.AdminService/ListPeers", strings.NewReader("{}"))
	req.Header.Set("Authorization", "Bearer "+h.Boot.AdminToken)
	req.Header.Set("Content-Type", "application/json")
	resp, err := h.HTTPClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var out struct {
		Peers []struct {
			Name      string `json:"name"`
			OverlayIP string `json:"overlayIp"`
		} `json:"peers"`
	}
	if resp.StatusCode != 200 || json.Unmarshal(body, &out) != nil || len(out.Peers) != 1 || out.Peers[0].OverlayIP != "100.64.0.1" {
		t.Fatalf("status %d body %s", resp.StatusCode, body)
	}
}
