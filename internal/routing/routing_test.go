package routing

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"go.uber.org/goleak"
	"go.uber.org/zap/zaptest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeOS records what the manager does to the machine as text.
type fakeOS struct {
	sysctl map[string]string
	table  string // the installed plan, "" when none
	log    []string
	failFW bool
}

func (f *fakeOS) Apply(p Plan) error {
	if f.failFW {
		return errors.New("nft: operation not permitted")
	}
	f.table = p.String()
	f.log = append(f.log, "nft replace table inet "+p.Table)
	return nil
}

func (f *fakeOS) Remove() error {
	f.table = ""
	f.log = append(f.log, "nft delete table")
	return nil
}

func (f *fakeOS) Get(k string) (string, error) { return f.sysctl[k], nil }

func (f *fakeOS) Set(k, v string) error {
	f.sysctl[k] = v
	f.log = append(f.log, "sysctl "+k+"="+v)
	return nil
}

func newFake(tb testing.TB, v4, v6 string) (*Manager, *fakeOS) {
	f := &fakeOS{sysctl: map[string]string{ForwardV4: v4, ForwardV6: v6}}
	log := zaptest.NewLogger(tb)
	return newManager(Config{Iface: "meshd0", Log: log}, f, newForwarding(f, log)), f
}

func route(s string, masq bool) Route {
	return Route{Network: netip.MustParsePrefix(s), Masquerade: masq}
}

func TestServesAndRemovesRoutes(t *testing.T) {
	m, f := newFake(t, "0", "0")
	if err := m.Apply([]Route{route("10.99.0.7/24", true), route("192.168.5.0/24", false)}); err != nil {
		t.Fatal(err)
	}
	want := `table inet meshd-meshd0 {
  chain forward {
    type filter hook forward priority filter; policy accept;
    iifname "meshd0" ip daddr 10.99.0.0/24 accept
    iifname "meshd0" ip daddr 192.168.5.0/24 accept
    iifname "meshd0" drop
  }
  chain postrouting {
    type nat hook postrouting priority srcnat; policy accept;
    iifname "meshd0" oifname != "meshd0" ip daddr 10.99.0.0/24 masquerade
  }
}
`
	if f.table != want {
		t.Errorf("table:\n%s\nwant:\n%s", f.table, want)
	}
	if f.sysctl[ForwardV4] != "1" || f.sysctl[ForwardV6] != "0" {
		t.Errorf("sysctls %v: want IPv4 forwarding only", f.sysctl)
	}
	// The same routes again change nothing.
	n := len(f.log)
	m.Apply([]Route{route("192.168.5.0/24", false), route("10.99.0.0/24", true)})
	if len(f.log) != n {
		t.Errorf("a repeated map touched the machine: %q", f.log[n:])
	}
	// An IPv6 network turns on IPv6 forwarding too; dropping it restores it.
	m.Apply([]Route{route("10.99.0.0/24", true), route("fd00:99::/64", true)})
	if f.sysctl[ForwardV6] != "1" || !strings.Contains(f.table, `ip6 daddr fd00:99::/64 masquerade`) {
		t.Errorf("v6 route: sysctls %v table\n%s", f.sysctl, f.table)
	}
	m.Apply([]Route{route("10.99.0.0/24", true)})
	if f.sysctl[ForwardV6] != "0" || f.sysctl[ForwardV4] != "1" {
		t.Errorf("after the v6 route went: %v", f.sysctl)
	}
	// No routes: the table goes and forwarding is as it was.
	m.Apply(nil)
	if f.table != "" || f.sysctl[ForwardV4] != "0" {
		t.Errorf("after the last route went: table %q sysctls %v", f.table, f.sysctl)
	}
	if got := m.Served(); len(got) != 0 {
		t.Errorf("served %v", got)
	}
	// Order: forwarding on before the rules, restored after them.
	wantLog := `sysctl net/ipv4/ip_forward=1
nft replace table inet meshd-meshd0
sysctl net/ipv6/conf/all/forwarding=1
nft replace table inet meshd-meshd0
nft replace table inet meshd-meshd0
sysctl net/ipv6/conf/all/forwarding=0
nft delete table
sysctl net/ipv4/ip_forward=0`
	if got := strings.Join(f.log, "\n"); got != wantLog {
		t.Errorf("machine changes:\n%s\nwant:\n%s", got, wantLog)
	}
}

func TestForwardingAlreadyOnIsLeftOn(t *testing.T) {
	m, f := newFake(t, "1", "0")
	m.Apply([]Route{route("10.99.0.0/24", false)})
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if f.sysctl[ForwardV4] != "1" {
		t.Errorf("forwarding that was on before is now %q", f.sysctl[ForwardV4])
	}
	for _, l := range f.log {
		if strings.HasPrefix(l, "sysctl") {
			t.Errorf("touched a sysctl that was on already: %s", l)
		}
	}
	if f.table != "" {
		t.Error("Close left the table")
	}
	if err := m.Apply([]Route{route("10.99.0.0/24", false)}); err == nil {
		t.Error("Apply after Close succeeded")
	}
}

func TestCloseRestoresForwarding(t *testing.T) {
	m, f := newFake(t, "0", "0")
	m.Apply([]Route{route("10.99.0.0/24", true), route("fd00::/64", false)})
	m.Close()
	if f.sysctl[ForwardV4] != "0" || f.sysctl[ForwardV6] != "0" || f.table != "" {
		t.Errorf("after Close: sysctls %v table %q", f.sysctl, f.table)
	}
}

func TestFirewallErrorIsReported(t *testing.T) {
	m, f := newFake(t, "0", "0")
	f.failFW = true
	err := m.Apply([]Route{route("10.99.0.0/24", true)})
	if err == nil || !strings.Contains(err.Error(), "operation not permitted") {
		t.Fatalf("err %v", err)
	}
	m.Close()
	if f.sysctl[ForwardV4] != "0" {
		t.Error("forwarding not restored after a failed apply")
	}
}

func TestManagersShareForwarding(t *testing.T) {
	f := &fakeOS{sysctl: map[string]string{ForwardV4: "0", ForwardV6: "0"}}
	log := zaptest.NewLogger(t)
	fwd := newForwarding(f, log)
	a := newManager(Config{Iface: "wgA", Log: log}, f, fwd)
	b := newManager(Config{Iface: "wgB", Log: log}, f, fwd)
	a.Apply([]Route{route("10.99.0.0/24", true)})
	b.Apply([]Route{route("10.98.0.0/24", true)})
	a.Close()
	if f.sysctl[ForwardV4] != "1" {
		t.Fatal("one manager's close turned forwarding off under the other")
	}
	b.Apply(nil)
	if f.sysctl[ForwardV4] != "0" {
		t.Fatal("forwarding not restored when the last manager let go")
	}
}
