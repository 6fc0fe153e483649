package all

import (
	"context"
	"errors"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"meshd/internal/controlclient"
	"meshd/internal/keys"
	"meshd/internal/metricstest"
	"meshd/internal/rpcclient"
)

// TestAllServesMetricsApart: `meshd all --metrics-listen` serves control's,
// signal's and the relay's metrics in one scrape on that address, and
// nothing at /metrics on the public HTTPS port.
func TestAllServesMetricsApart(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	r, p := startFree(t, dir, true)
	metrics := p.metrics
	tok := r.waitJoin(t)

	// A login with a setup key control does not know.
	priv, err := keys.Generate()
	if err != nil {
		t.Fatal(err)
	}
	hc, err := rpcclient.New(tok.ControlURL, tok.Pin)
	if err != nil {
		t.Fatal(err)
	}
	defer hc.CloseIdleConnections()
	cc, err := controlclient.New(controlclient.Options{URL: tok.ControlURL, Pin: tok.Pin, Private: priv, HTTPClient: hc})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := cc.Login(ctx, "no-such-key"); !errors.Is(err, controlclient.ErrSetupKeyUnknown) {
		t.Fatalf("login with an unknown key: %v", err)
	}

	m := metricstest.Scrape(t, "http://"+metrics+"/metrics")
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"meshd_control_logins_total", []string{"result", "setup_key_unknown"}, 1},
		{"meshd_control_logins_total", []string{"result", "ok"}, 0},
		{"meshd_control_peers", nil, 0},
		{"meshd_signal_connected_peers", nil, 0},
		{"meshd_relay_allocations", []string{"transport", "udp"}, 0},
	} {
		if got := m.Value(t, c.name, c.labels...); got != c.want {
			t.Errorf("%s %v = %g, want %g", c.name, c.labels, got, c.want)
		}
	}
	if m.Value(t, "go_goroutines") < 1 {
		t.Error("go_goroutines missing: the runtime's metrics should come along")
	}

	resp, err := hc.Get(tok.ControlURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("/metrics on the HTTPS port: %s, want 404", resp.Status)
	}
}
