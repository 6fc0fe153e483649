package control_test

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	controlv1 "meshd/api/control/v1"
	"meshd/internal/control/controltest"
)

// Golden files live in testdata/<test name>.golden. Regenerate them with
// MESHD_UPDATE_GOLDEN=1 go test ./internal/control/ (or -update), then read
// the diff: every test also asserts the fields that matter directly.
var update = flag.Bool("update", os.Getenv("MESHD_UPDATE_GOLDEN") != "", "rewrite golden files")

func golden(t *testing.T, got string) {
	t.Helper()
	path := filepath.Join("testdata", strings.ReplaceAll(t.Name(), "/", "__")+".golden")
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with MESHD_UPDATE_GOLDEN=1 to create it)", err)
	}
	if string(want) != got {
		t.Fatalf("%s differs (MESHD_UPDATE_GOLDEN=1 rewrites it):\n--- want\n%s\n--- got\n%s", path, want, got)
	}
}

// renderMaps prints the newest map of each agent in a stable, readable form:
// keys and addresses become agent names, credentials are reduced to what is
// stable, serials are left out.
func renderMaps(agents ...*controltest.Agent) string {
	names := map[string]string{}
	for _, a := range agents {
		m := a.Latest()
		names[m.Self.PublicKey] = a.Name
		names[m.Self.OverlayIp] = a.Name
	}
	name := func(s string) string {
		if n, ok := names[s]; ok {
			return n
		}
		return s
	}
	var b strings.Builder
	for _, a := range agents {
		m := a.Latest()
		s := m.Self
		fmt.Fprintf(&b, "map of %s: %s %s in %s, mtu %d\n", a.Name, s.OverlayIp, s.DnsName, s.OverlayNetwork, s.Mtu)
		for _, p := range m.Peers {
			fmt.Fprintf(&b, "  peer %s %s %s allowed %s online=%v\n", name(p.PublicKey), p.OverlayIp, p.DnsName,
				strings.Join(p.AllowedIps, ","), p.Online)
		}
		for _, r := range m.FirewallRules {
			fmt.Fprintf(&b, "  rule %s %s %s%s\n", strings.TrimPrefix(r.Direction.String(), "DIRECTION_"), name(r.PeerIp),
				strings.ToLower(strings.TrimPrefix(r.Protocol.String(), "PROTOCOL_")), ports(r.Ports))
		}
		for _, r := range m.Routes {
			fmt.Fprintf(&b, "  route %s via %s metric %d masquerade=%v\n", r.Network, name(r.PeerPublicKey), r.Metric, r.Masquerade)
		}
		if d := m.Dns; d != nil {
			fmt.Fprintf(&b, "  dns domain %s\n", d.Domain)
			for _, n := range d.NameserverGroups {
				fmt.Fprintf(&b, "  dns nameservers %s %s match %s\n", n.Name, strings.Join(n.Nameservers, ","), strings.Join(n.MatchDomains, ","))
			}
			for _, r := range d.Records {
				fmt.Fprintf(&b, "  dns record %s %s %s ttl %d\n", r.Name, r.Type, r.Value, r.Ttl)
			}
		}
		for _, r := range m.Relays {
			cred := ""
			if r.Username != "" {
				exp, id, _ := strings.Cut(r.Username, ":")
				if id == s.PeerId {
					id = "self"
				}
				cred = fmt.Sprintf(" user %s:%s expires %s", exp, id, r.Expires.AsTime().UTC().Format("2006-01-02T15:04:05Z"))
			}
			fmt.Fprintf(&b, "  relay %s%s\n", strings.Join(r.Urls, " "), cred)
		}
		fmt.Fprintf(&b, "  signal %s %s\n", m.SignalUrl, m.SignalTlsPin)
	}
	return b.String()
}

func ports(ps []*controlv1.PortRange) string {
	var out []string
	for _, p := range ps {
		if p.Start == p.End {
			out = append(out, fmt.Sprint(p.Start))
		} else {
			out = append(out, fmt.Sprintf("%d-%d", p.Start, p.End))
		}
	}
	if len(out) == 0 {
		return ""
	}
	return " " + strings.Join(out, ",")
}
