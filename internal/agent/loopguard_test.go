package agent

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	controlv1 "meshd/api/control/v1"
	daemonv1 "meshd/api/daemon/v1"
	"meshd/wg"
)

func TestLoopPrefixes(t *testing.T) {
	overlay := netip.MustParsePrefix("100.64.0.7/16")
	peers := []*controlv1.RemotePeer{
		{AllowedIps: []string{"100.64.0.1/32", "192.168.1.0/24", "10.0.0.0/8"}},
		{AllowedIps: []string{"100.64.0.2/32", "192.168.1.0/24", "0.0.0.0/0", "bad"}},
		{AllowedIps: []string{"192.168.9.0/24"}},
	}
	only := []netip.Prefix{netip.MustParsePrefix("100.64.0.0/16")}
	for _, tc := range []struct {
		name string
		ri   wg.RouteInfo
		want []string
	}{
		// Policy routing: the agent's sockets never follow the mesh's
		// routes, so routed networks stay usable as paths.
		{"policy routing", wg.RouteInfo{Kernel: true, Table: 51820, Bypass: true}, nil},
		// Netstack: no kernel routes at all.
		{"netstack", wg.RouteInfo{}, nil},
		// Routes in the main table: the agent's sockets follow them into
		// the tunnel, so every routed network is guarded, except what
		// the machine routes itself (skipped) and default routes.
		{"main table", wg.RouteInfo{Kernel: true, Skipped: []netip.Prefix{netip.MustParsePrefix("192.168.9.0/24")}},
			[]string{"192.168.1.0/24", "10.0.0.0/8"}},
	} {
		got := loopPrefixes(overlay, tc.ri, peers)
		want := slices.Clone(only)
		for _, s := range tc.want {
			want = append(want, netip.MustParsePrefix(s))
		}
		if !slices.Equal(got, want) {
			t.Errorf("%s: %v, want %v", tc.name, got, want)
		}
	}
}

func TestAnnotateRoutesSaysWhereRoutesWent(t *testing.T) {
	in := []*daemonv1.RouteStatus{
		{Network: "192.168.1.0/24", State: RouteActive},
		{Network: "192.168.9.0/24", State: RouteActive},
		{Network: "10.1.0.0/16", State: RouteServing},
	}
	got := annotateRoutes(in, wg.RouteInfo{Kernel: true, Table: 51820, Bypass: true, Skipped: []netip.Prefix{netip.MustParsePrefix("192.168.9.0/24")}})
	if !strings.Contains(got[0].GetMessage(), "table 51820") {
		t.Errorf("installed route: %q", got[0].GetMessage())
	}
	if !strings.Contains(got[1].GetMessage(), "not routed through the mesh") {
		t.Errorf("skipped route: %q", got[1].GetMessage())
	}
	if got[2].GetMessage() != "" {
		t.Errorf("served route annotated: %q", got[2].GetMessage())
	}
	if in[0].GetMessage() != "" {
		t.Error("annotateRoutes changed its input")
	}
	got = annotateRoutes(in, wg.RouteInfo{Kernel: true, Reason: "operation not permitted"})
	if !strings.Contains(got[0].GetMessage(), "main routing table") || !strings.Contains(got[0].GetMessage(), "operation not permitted") {
		t.Errorf("route without policy routing: %q", got[0].GetMessage())
	}
}
