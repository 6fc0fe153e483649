package daemon

import (
	"bytes"
	"encoding/json"
	"sort"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	daemonv1 "meshd/api/daemon/v1"
)

var hs = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

func sample() *daemonv1.StatusResponse {
	return &daemonv1.StatusResponse{
		State: "up",
		Self: &daemonv1.SelfStatus{
			Name: "alpha", DnsName: "alpha.mesh", OverlayIp: "100.64.0.1", PublicKey: "PUBA=",
			Control: &daemonv1.ServerStatus{Url: "https://c:443", State: "connected"},
			Signal:  &daemonv1.ServerStatus{Url: "https://c:443", State: "connecting", Error: "refused"},
		},
		Peers: []*daemonv1.PeerStatus{
			{Name: "beta", DnsName: "beta.mesh", OverlayIp: "100.64.0.2", PublicKey: "PUBB=", State: "connected", Path: "direct",
				LocalCandidate:  &daemonv1.Candidate{Type: "host", Address: "192.168.1.2:51820"},
				RemoteCandidate: &daemonv1.Candidate{Type: "srflx", Address: "198.51.100.3:40000"},
				LatencyMs:       1.25, LastHandshake: timestamppb.New(hs), RxBytes: 1 << 40, TxBytes: 42},
			{Name: "gamma", OverlayIp: "100.64.0.3", PublicKey: "PUBC=", State: "idle"},
		},
	}
}

func keys(m map[string]any) string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return strings.Join(ks, ",")
}

func TestStatusJSONShape(t *testing.T) {
	var buf bytes.Buffer
	if err := WriteJSON(&buf, sample()); err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(buf.Bytes(), &m); err != nil {
		t.Fatal(err)
	}
	self := m["self"].(map[string]any)
	for k, want := range map[string]any{"name": "alpha", "overlay_ip": "100.64.0.1", "public_key": "PUBA="} {
		if self[k] != want {
			t.Errorf("self.%s = %v, want %v", k, self[k], want)
		}
	}
	if c := self["control"].(map[string]any); c["state"] != "connected" || c["url"] != "https://c:443" {
		t.Errorf("self.control = %v", c)
	}
	if s := self["signal"].(map[string]any); s["state"] != "connecting" || s["error"] != "refused" {
		t.Errorf("self.signal = %v", s)
	}
	peers := m["peers"].([]any)
	if len(peers) != 2 {
		t.Fatalf("%d peers", len(peers))
	}
	p := peers[0].(map[string]any)
	if got, want := keys(p), "dns_name,last_handshake,latency_ms,local_candidate,name,overlay_ip,path,post_quantum,public_key,remote_candidate,rx_bytes,state,tx_bytes"; got != want {
		t.Fatalf("peer fields %s, want %s", got, want)
	}
	checks := map[string]any{
		"name": "beta", "dns_name": "beta.mesh", "overlay_ip": "100.64.0.2", "public_key": "PUBB=", "state": "connected",
		"path": "direct", "latency_ms": 1.25, "last_handshake": "2030-01-02T03:04:05Z",
		"rx_bytes": float64(1 << 40), "tx_bytes": float64(42),
	}
	for k, want := range checks {
		if p[k] != want {
			t.Errorf("peer.%s = %#v, want %#v", k, p[k], want)
		}
	}
	if lc := p["local_candidate"].(map[string]any); lc["type"] != "host" || lc["address"] != "192.168.1.2:51820" {
		t.Errorf("local_candidate = %v", lc)
	}
	if rc := p["remote_candidate"].(map[string]any); rc["type"] != "srflx" || rc["address"] != "198.51.100.3:40000" {
		t.Errorf("remote_candidate = %v", rc)
	}
	// A peer without a path: empty path, null candidates, no handshake.
	q := peers[1].(map[string]any)
	if q["path"] != "" || q["local_candidate"] != nil || q["remote_candidate"] != nil || q["last_handshake"] != "" || q["state"] != "idle" {
		t.Errorf("idle peer = %v", q)
	}
	// rx_bytes is a JSON number (not a protojson string).
	if !strings.Contains(buf.String(), `"rx_bytes": 1099511627776`) {
		t.Errorf("rx_bytes not a plain number:\n%s", buf.String())
	}
}

func TestStatusTable(t *testing.T) {
	var buf bytes.Buffer
	if err := WriteTable(&buf, sample(), hs.Add(90*time.Second)); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, want := range []string{"alpha  100.64.0.1  up", "signal  connecting  https://c:443  (refused)",
		"beta", "direct", "srflx 198.51.100.3:40000", "1.2ms", "1m30s ago", "1.0 TiB", "42 B", "gamma", "never"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
}

func withRoutes() *daemonv1.StatusResponse {
	r := sample()
	r.Routes = []*daemonv1.RouteStatus{
		{Network: "10.99.0.0/24", State: "serving", Masquerade: true, Metric: 9999},
		{Network: "192.168.7.0/24", Via: "beta", ViaPublicKey: "PUBB=", State: "active", Metric: 10},
	}
	r.Dns = &daemonv1.DNSStatus{Addresses: []string{"100.64.0.1:53"}, Domain: "meshd.internal", Mode: "manual"}
	return r
}

func TestStatusRoutesAndDNS(t *testing.T) {
	var buf bytes.Buffer
	if err := WriteJSON(&buf, withRoutes()); err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(buf.Bytes(), &m); err != nil {
		t.Fatal(err)
	}
	routes := m["routes"].([]any)
	if len(routes) != 2 {
		t.Fatalf("routes %v", routes)
	}
	r0, r1 := routes[0].(map[string]any), routes[1].(map[string]any)
	if r0["network"] != "10.99.0.0/24" || r0["via"] != "" || r0["state"] != "serving" || r0["masquerade"] != true ||
		r1["via"] != "beta" || r1["via_public_key"] != "PUBB=" || r1["state"] != "active" || r1["metric"] != float64(10) {
		t.Errorf("routes %v", routes)
	}
	d := m["dns"].(map[string]any)
	if d["domain"] != "meshd.internal" || d["mode"] != "manual" || d["addresses"].([]any)[0] != "100.64.0.1:53" {
		t.Errorf("dns %v", d)
	}
	// The fields scripts already use are unchanged.
	if keys(m["self"].(map[string]any)) != "control,dns_name,interface,listen_port,name,overlay_ip,public_key,signal" {
		t.Errorf("self fields %s", keys(m["self"].(map[string]any)))
	}

	buf.Reset()
	if err := WriteTable(&buf, withRoutes(), hs); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, want := range []string{
		"dns     100.64.0.1:53  meshd.internal  manual",
		"ROUTE           VIA           STATE    MASQUERADE  METRIC",
		"10.99.0.0/24    this machine  serving  yes         9999",
		"192.168.7.0/24  beta          active   no          10",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	// Without a tunnel: no dns line, empty routes.
	var empty bytes.Buffer
	WriteJSON(&empty, sample())
	if !strings.Contains(empty.String(), `"routes": []`) || !strings.Contains(empty.String(), `"dns": null`) {
		t.Errorf("no routes and no resolver:\n%s", empty.String())
	}
}

// TestStatusSaysWhyNotDirect: a peer's reason reaches the JSON and the
// table, under the peers.
func TestStatusSaysWhyNotDirect(t *testing.T) {
	r := sample()
	r.Peers[1].State, r.Peers[1].Path = "connected", "relayed"
	r.Peers[1].Reason = "UDP to the relay's STUN port gets no answer from here"
	var js bytes.Buffer
	if err := WriteJSON(&js, r); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(js.String(), `"reason": "UDP to the relay's STUN port gets no answer from here"`) {
		t.Errorf("JSON lacks the reason:\n%s", js.String())
	}
	var tb bytes.Buffer
	if err := WriteTable(&tb, r, hs); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(tb.String(), "why not direct:\n  gamma (connected, relayed): UDP to the relay's STUN port") {
		t.Errorf("table lacks the reason:\n%s", tb.String())
	}
}
