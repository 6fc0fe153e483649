package routing

import (
	"net/netip"
	"os/exec"
	"strings"
	"testing"

	"go.uber.org/zap/zaptest"

	"meshd/internal/netnstest"
)

// netns makes a namespace "mrt-<pid>-<n>" (netnstest.New).
func netns(tb testing.TB) (string, func(fn func())) {
	tb.Helper()
	return netnstest.New(tb, "mrt", "nft")
}

func inNS(tb testing.TB, ns string, args ...string) string {
	tb.Helper()
	out, err := exec.Command("ip", append([]string{"netns", "exec", ns}, args...)...).CombinedOutput()
	if err != nil {
		return "ERROR " + err.Error() + ": " + string(out)
	}
	return strings.TrimSpace(string(out))
}

// TestNftablesTableInANamespace installs and removes the real table and
// forwarding sysctl, for two interfaces side by side.
func TestNftablesTableInANamespace(t *testing.T) {
	ns, do := netns(t)
	log := zaptest.NewLogger(t)
	var a, b *Manager
	do(func() {
		var err error
		if a, err = New(Config{Iface: "wgA", Log: log}); err != nil {
			t.Error(err)
			return
		}
		b, _ = New(Config{Iface: "wgB", Log: log})
		if err := a.Apply([]Route{{Network: netip.MustParsePrefix("10.99.0.0/24"), Masquerade: true}}); err != nil {
			t.Error(err)
		}
		if err := b.Apply([]Route{{Network: netip.MustParsePrefix("10.98.0.0/16")}}); err != nil {
			t.Error(err)
		}
	})
	if t.Failed() {
		return
	}
	ta := inNS(t, ns, "nft", "list", "table", "inet", "meshd-wgA")
	for _, want := range []string{
		`type filter hook forward priority filter; policy accept;`,
		`iifname "wgA" ip daddr 10.99.0.0/24 counter packets 0 bytes 0 accept`,
		`iifname "wgA" counter packets 0 bytes 0 drop`,
		`type nat hook postrouting priority srcnat; policy accept;`,
		`iifname "wgA" oifname != "wgA" ip daddr 10.99.0.0/24 counter packets 0 bytes 0 masquerade`,
	} {
		if !strings.Contains(ta, want) {
			t.Errorf("table of wgA lacks %q:\n%s", want, ta)
		}
	}
	tb := inNS(t, ns, "nft", "list", "table", "inet", "meshd-wgB")
	if !strings.Contains(tb, `ip daddr 10.98.0.0/16`) || strings.Contains(tb, "masquerade") {
		t.Errorf("table of wgB:\n%s", tb)
	}
	if got := inNS(t, ns, "sysctl", "-n", "net.ipv4.ip_forward"); got != "1" {
		t.Errorf("ip_forward %q", got)
	}
	// Removing a's route removes a's table only; forwarding stays for b.
	do(func() {
		if err := a.Apply(nil); err != nil {
			t.Error(err)
		}
	})
	if got := inNS(t, ns, "nft", "list", "tables"); strings.Contains(got, "meshd-wgA") || !strings.Contains(got, "meshd-wgB") {
		t.Errorf("tables after a's route went: %q", got)
	}
	if got := inNS(t, ns, "sysctl", "-n", "net.ipv4.ip_forward"); got != "1" {
		t.Errorf("b still routes, yet ip_forward is %q", got)
	}
	do(func() {
		if err := b.Close(); err != nil {
			t.Error(err)
		}
		a.Close()
	})
	if got := inNS(t, ns, "nft", "list", "tables"); got != "" {
		t.Errorf("tables left: %q", got)
	}
	if got := inNS(t, ns, "sysctl", "-n", "net.ipv4.ip_forward"); got != "0" {
		t.Errorf("ip_forward %q after the last route went, want 0", got)
	}
}
