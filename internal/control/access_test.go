package control_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	adminv1 "meshd/api/admin/v1"
	"meshd/internal/control/controltest"
)

// CheckAccess answers from the rules the agents compile: a one-way tcp/22
// policy lets a reach b on 22 and nothing else, not b reach a; the default
// all-to-all policy, while enabled, allows everything and is named.
func TestCheckAccess(t *testing.T) {
	h := controltest.NewHarness(t, 3, controltest.Quiet())
	a, b := h.Agents[0].Name, h.Agents[1].Name
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	check := func(src, dst, proto string, port uint32) *adminv1.CheckAccessResponse {
		t.Helper()
		res, err := h.Admin.CheckAccess(ctx, connect.NewRequest(&adminv1.CheckAccessRequest{Source: src, Destination: dst, Protocol: proto, Port: port}))
		if err != nil {
			t.Fatalf("check %s→%s %s/%d: %v", src, dst, proto, port, err)
		}
		return res.Msg
	}
	if r := check(a, b, "udp", 5353); !r.Allowed || !slices.Equal(r.Policies, []string{"Default"}) {
		t.Fatalf("under the default policy: %v", r)
	}
	pols, err := h.Admin.ListPolicies(ctx, connect.NewRequest(&adminv1.ListPoliciesRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	off := false
	if _, err := h.Admin.UpdatePolicy(ctx, connect.NewRequest(&adminv1.UpdatePolicyRequest{Id: pols.Msg.Policies[0].Id, Enabled: &off})); err != nil {
		t.Fatal(err)
	}
	for _, g := range []struct{ name, peer string }{{"ops", a}, {"servers", b}} {
		if _, err := h.Admin.CreateGroup(ctx, connect.NewRequest(&adminv1.CreateGroupRequest{Name: g.name, Peers: []string{g.peer}})); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := h.Admin.CreatePolicy(ctx, connect.NewRequest(&adminv1.CreatePolicyRequest{Name: "ssh", Sources: []string{"ops"},
		Destinations: []string{"servers"}, Protocol: "tcp", Ports: []string{"22"}})); err != nil {
		t.Fatal(err)
	}
	if r := check(a, b, "tcp", 22); !r.Allowed || !slices.Equal(r.Policies, []string{"ssh"}) {
		t.Errorf("ops→servers tcp/22: %v, want allowed by ssh", r)
	}
	for _, c := range []struct {
		src, dst, proto string
		port            uint32
		why             string
	}{
		{a, b, "tcp", 23, "rules"},
		{a, b, "udp", 22, "rules"},
		{a, b, "icmp", 0, "rules"},
		{b, a, "tcp", 22, "rules"},
		{a, h.Agents[2].Name, "tcp", 22, "no enabled policy"},
	} {
		if r := check(c.src, c.dst, c.proto, c.port); r.Allowed || !strings.Contains(r.Reason, c.why) {
			t.Errorf("%s→%s %s/%d: %v, want refused (%s)", c.src, c.dst, c.proto, c.port, r, c.why)
		}
	}
	for _, bad := range []*adminv1.CheckAccessRequest{
		{Source: a, Destination: b, Protocol: "tcp"},
		{Source: a, Destination: b, Protocol: "sctp", Port: 1},
		{Source: a, Destination: a, Protocol: "tcp", Port: 22},
		{Source: "nobody", Destination: b, Protocol: "tcp", Port: 22},
	} {
		if _, err := h.Admin.CheckAccess(ctx, connect.NewRequest(bad)); err == nil {
			t.Errorf("%v: no error", bad)
		}
	}
}
