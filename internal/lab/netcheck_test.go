//go:build linux

package lab

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"meshd/nat/netcheck"
	"meshd/nat/netcheck/stuntest"
)

// runJSON runs the meshd binary in h's namespace with args and decodes its
// standard output into v; the exit error is returned next to what decoded.
func runJSON(ctx context.Context, tb testing.TB, h *Host, v any, args ...string) error {
	tb.Helper()
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", h.Namespace(), Binary(tb)}, args...)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, runErr := cmd.Output()
	if err := json.Unmarshal(out, v); err != nil {
		return fmt.Errorf("meshd %s on %s: %v; decode: %w\n%s%s", args[0], h.Name(), runErr, err, out, stderr.String())
	}
	if runErr != nil {
		return fmt.Errorf("meshd %s on %s: %w: %s", args[0], h.Name(), runErr, strings.TrimSpace(stderr.String()))
	}
	return nil
}

// TestNetcheckTellsRouterKindsApart: `meshd netcheck` on a host behind
// each router kind, asking the real relay of `meshd all` and a second STUN
// port on the same host, tells a home router (one mapping for every
// destination), a symmetric NAT (a mapping per destination) and a network
// that blocks UDP apart.
func TestNetcheckTellsRouterKindsApart(t *testing.T) {
	ctx := context.Background()
	l := New(t)
	srvHost := l.Host("srv", nil)
	kinds := []Kind{Home, Symmetric, UDPBlocked}
	hosts := map[Kind]*Host{}
	for _, k := range kinds {
		hosts[k] = l.Host(string(k), l.Router("r"+string(k), k))
	}
	l.Step("build topology")
	Binary(t)
	StartServer(ctx, t, srvHost)
	c, err := srvHost.ListenUDP(netip.AddrPortFrom(srvHost.IP(), STUNPort+1))
	Must(t, err)
	stuntest.Serve(t, c)
	l.Step("relay and a second STUN port up")

	relay := fmt.Sprintf("stun:%s:%d", srvHost.IP(), STUNPort)
	second := fmt.Sprintf("stun:%s:%d", srvHost.IP(), STUNPort+1)
	for _, k := range kinds {
		h := hosts[k]
		var r netcheck.Report
		err := runJSON(ctx, t, h, &r, "netcheck", "--json", "--timeout", "2s", "--relay-url", relay, "--relay-url", second)
		Must(t, err)
		t.Logf("%s: udp=%v v4=%s varies=%v (%s) portmap=%+v relays=%+v", k, r.UDP, r.GlobalV4, deref(r.MappingVariesByDest), r.MappingNote, r.PortMapping, r.Relays)
		if r.PortMapping.UPnP || r.PortMapping.NATPMP || r.PortMapping.PCP {
			t.Errorf("%s: the lab's routers map no ports, netcheck says %+v", k, r.PortMapping)
		}
		if r.PortMapping.Gateway != h.Router().gateway().String() {
			t.Errorf("%s: gateway %q, want the router's LAN address", k, r.PortMapping.Gateway)
		}
		switch k {
		case Home, Symmetric:
			if !r.UDP || !r.IPv4 || r.MappingVariesByDest == nil {
				t.Fatalf("%s: want UDP and a verdict on the mapping, got %+v", k, r)
			}
			if ip := strings.Split(r.GlobalV4, ":")[0]; ip != h.Router().PublicIP().String() {
				t.Errorf("%s: global address %s, want the router's %s", k, r.GlobalV4, h.Router().PublicIP())
			}
			if got, want := *r.MappingVariesByDest, k == Symmetric; got != want {
				t.Errorf("%s: mapping varies by destination = %v, want %v", k, got, want)
			}
			if r.NearestRelay == "" || r.Relays[0].LatencyMs <= 0 {
				t.Errorf("%s: no relay latency: %+v", k, r.Relays)
			}
		case UDPBlocked:
			if r.UDP || r.IPv4 || r.MappingVariesByDest != nil {
				t.Errorf("%s: want no UDP and no verdict, got %+v", k, r)
			}
		}
	}
	// One server only: the mapping cannot be told.
	var r netcheck.Report
	Must(t, runJSON(ctx, t, hosts[Symmetric], &r, "netcheck", "--json", "--timeout", "2s", "--relay-url", relay))
	if r.MappingVariesByDest != nil || r.MappingNote != "unknown (one STUN server)" {
		t.Errorf("one STUN server: got %v %q", deref(r.MappingVariesByDest), r.MappingNote)
	}
}

func deref(b *bool) string {
	if b == nil {
		return "null"
	}
	return fmt.Sprint(*b)
}

// pingReport is `meshd ping --json`.
type pingReport struct {
	Direct  bool `json:"direct"`
	Replies []struct {
		LatencyMs float64 `json:"latency_ms"`
		Path      string  `json:"path"`
		Relay     string  `json:"relay"`
		Remote    *struct {
			Type    string `json:"type"`
			Address string `json:"address"`
		} `json:"remote_candidate"`
		Error string `json:"error"`
	} `json:"replies"`
}

// TestPingShowsPathKind: `meshd ping` from a host behind a home router
// reports a direct path to a peer behind another home router (with
// --until-direct it succeeds) and a relayed one, naming the relay, to a
// peer whose network blocks UDP (with --until-direct it fails). `meshd
// netcheck` with no --relay-url finds the relay through the agent.
func TestPingShowsPathKind(t *testing.T) {
	ctx := context.Background()
	l := New(t)
	a := l.Host("home1", l.Router("rhome1", Home))
	b := l.Host("home2", l.Router("rhome2", Home))
	c := l.Host("blocked", l.Router("rblocked", UDPBlocked))
	l.Step("build topology")
	srv, agents := startMesh(ctx, t, l, a, b, c)
	aa, ab, ac := agents[0], agents[1], agents[2]

	var direct pingReport
	err := runJSON(ctx, t, a, &direct, "ping", "--json", "--until-direct", "--timeout", "30s", "--socket", aa.Socket, ab.OverlayIP().String())
	Must(t, err)
	last := direct.Replies[len(direct.Replies)-1]
	if !direct.Direct || last.Path != "direct" || last.Remote == nil || last.LatencyMs <= 0 {
		t.Fatalf("home ↔ home: want a direct answer with its candidate pair, got %+v", direct)
	}
	if !strings.HasPrefix(last.Remote.Address, b.Router().PublicIP().String()+":") {
		t.Errorf("direct answer via %s, want the peer's router %s", last.Remote.Address, b.Router().PublicIP())
	}
	l.Step("ping home ↔ home: direct")

	var relayed pingReport
	err = runJSON(ctx, t, a, &relayed, "ping", "--json", "--count", "3", "--timeout", "30s", "--socket", aa.Socket, ac.OverlayIP().String())
	Must(t, err)
	n := 0
	for _, r := range relayed.Replies {
		if r.Path == "relayed" {
			n++
			if !strings.HasPrefix(r.Relay, srv.Host.IP().String()+":") {
				t.Errorf("relayed answer names relay %q, want the server %s", r.Relay, srv.Host.IP())
			}
		}
		if r.Path == "direct" {
			t.Errorf("home ↔ udp-blocked answered over a direct path: %+v", r)
		}
	}
	if n == 0 || relayed.Direct {
		t.Fatalf("home ↔ udp-blocked: want relayed answers, got %+v", relayed)
	}
	var never pingReport
	err = runJSON(ctx, t, a, &never, "ping", "--json", "--until-direct", "--timeout", "3s", "--socket", aa.Socket, ac.OverlayIP().String())
	if err == nil || never.Direct {
		t.Fatalf("--until-direct to a relayed peer must fail, got %v %+v", err, never)
	}
	l.Step("ping home ↔ udp-blocked: relayed")

	var r netcheck.Report
	Must(t, runJSON(ctx, t, a, &r, "netcheck", "--json", "--timeout", "2s", "--socket", aa.Socket))
	if !r.UDP || len(r.Relays) == 0 || !strings.Contains(r.Relays[0].Address, srv.Host.IP().String()) {
		t.Fatalf("netcheck through the agent: %+v", r)
	}
}
