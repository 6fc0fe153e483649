package control_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	adminv1 "meshd/api/admin/v1"
	"meshd/internal/control/controltest"
	"meshd/internal/controlclient"
	"meshd/internal/metricstest"
	"meshd/internal/testutil"
)

// TestMetricsCountLoginsMapsAndPeers logs agents in (two succeed, two are
// refused), lets maps flow, and reads the counts back from /metrics over
// HTTP with the Prometheus text parser.
func TestMetricsCountLoginsMapsAndPeers(t *testing.T) {
	h := controltest.NewHarness(t, 0)
	url := metricstest.Serve(t, h.Service.Metrics())
	scrape := func() metricstest.Families { return metricstest.Scrape(t, url) }

	// One agent. Its first map is usually the only one; a change round
	// (its going online) may add another when it lands after that map.
	alpha := h.AddAgent(controltest.AgentOptions{Hostname: "alpha"})
	first := alpha.WaitFor(t, "first map", func(*controltest.Map) bool { return true })
	var m metricstest.Families
	testutil.WaitFor(t, 10*time.Second, "alpha's maps on /metrics", func() bool {
		m = scrape()
		sent := m.Value(t, "meshd_control_maps_sent_total", "kind", "full") + m.Value(t, "meshd_control_maps_sent_total", "kind", "update")
		return sent >= 1 && sent == float64(alpha.Count())
	})
	full := m.Value(t, "meshd_control_maps_sent_total", "kind", "full")
	n, sum := m.Histogram(t, "meshd_control_map_bytes", "kind", "full")
	switch size := float64(proto.Size(first)); {
	case float64(n) != full:
		t.Errorf("map_bytes{full} has %d observations, %g full maps sent", n, full)
	case full == 1 && sum != size:
		t.Errorf("map_bytes{full}: %g bytes, want %g, the size of the map alpha got", sum, size)
	case sum < size:
		t.Errorf("map_bytes{full}: %g bytes in %d maps, less than alpha's first map alone (%g)", sum, n, size)
	}
	if n, sum := m.Histogram(t, "meshd_control_map_compute_seconds"); float64(n) != full || sum <= 0 {
		t.Errorf("map_compute_seconds: %d observations, sum %g; want one a full map (%g), above 0", n, sum, full)
	}

	// A second peer joins; two logins are refused.
	bravo := h.AddAgent(controltest.AgentOptions{Hostname: "bravo"})
	alpha.WaitFor(t, "bravo in alpha's map", func(mp *controltest.Map) bool {
		return len(mp.Peers) == 1 && mp.Peers[0].Online
	})
	if err := h.NewAgent(controltest.AgentOptions{Hostname: "bogus"}).Login("not-a-key"); !errors.Is(err, controlclient.ErrSetupKeyUnknown) {
		t.Fatalf("login with an unknown key: %v", err)
	}
	revoked := createKey(t, h, &adminv1.CreateSetupKeyRequest{Name: "gone"})
	if _, err := h.Admin.UpdateSetupKey(context.Background(), connect.NewRequest(&adminv1.UpdateSetupKeyRequest{Id: "gone", Revoked: ptr(true)})); err != nil {
		t.Fatal(err)
	}
	if err := h.NewAgent(controltest.AgentOptions{Hostname: "late"}).Login(revoked); !errors.Is(err, controlclient.ErrSetupKeyRevoked) {
		t.Fatalf("login with a revoked key: %v", err)
	}

	testutil.WaitFor(t, 10*time.Second, "every map the agents got counted", func() bool {
		m = scrape()
		sent := m.Value(t, "meshd_control_maps_sent_total", "kind", "full") + m.Value(t, "meshd_control_maps_sent_total", "kind", "update")
		return sent == float64(alpha.Count()+bravo.Count())
	})
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"meshd_control_logins_total", []string{"result", "ok"}, 2},
		{"meshd_control_logins_total", []string{"result", "setup_key_unknown"}, 1},
		{"meshd_control_logins_total", []string{"result", "setup_key_revoked"}, 1},
		{"meshd_control_logins_total", []string{"result", "setup_key_expired"}, 0},
		{"meshd_control_logins_total", []string{"result", "error"}, 0},
		{"meshd_control_peers", nil, 2},
		{"meshd_control_peers_online", nil, 2},
		{"meshd_control_sync_streams", nil, 2},
	} {
		if got := m.Value(t, c.name, c.labels...); got != c.want {
			t.Errorf("%s %v = %g, want %g", c.name, c.labels, got, c.want)
		}
	}
	for _, kind := range []string{"full", "update"} {
		n, _ := m.Histogram(t, "meshd_control_map_bytes", "kind", kind)
		if sent := m.Value(t, "meshd_control_maps_sent_total", "kind", kind); float64(n) != sent {
			t.Errorf("map_bytes{%s} has %d observations, %g maps sent", kind, n, sent)
		}
	}
	if n, _ := m.Histogram(t, "meshd_control_change_round_seconds"); n < 1 {
		t.Errorf("change_round_seconds: %d rounds, want at least the one bravo's join caused", n)
	}

	// A peer whose stream ends is offline.
	bravo.Stop()
	testutil.WaitFor(t, 10*time.Second, "bravo offline on /metrics", func() bool {
		m = scrape()
		return m.Value(t, "meshd_control_peers_online") == 1 && m.Value(t, "meshd_control_sync_streams") == 1
	})
	if got := m.Value(t, "meshd_control_peers"); got != 2 {
		t.Errorf("peers = %g after bravo went offline, want 2", got)
	}
}
