package wg

import (
	"errors"
	"net/netip"
	"os/exec"
	"strings"
	"testing"

	"go.uber.org/zap/zaptest"

	controlv1 "meshd/api/control/v1"
	"meshd/internal/filter"
	"meshd/internal/filter/nftfilter"
	"meshd/internal/keys"
	"meshd/internal/netnstest"
)

// inKernelNS makes a namespace "kf-wg-<pid>-<n>" (netnstest.New).
func inKernelNS(tb testing.TB) (string, func(fn func())) {
	tb.Helper()
	return netnstest.New(tb, "kf-wg", "nft")
}

type opaqueFilter struct{}

func (opaqueFilter) Allow([]byte, bool) bool { return true }

// TestKernelFirewallWiring checks what kernel mode does with the firewall
// (kernel WireGuard itself cannot run on a machine without the module; the
// table's effect on traffic is nftfilter's root test): the table is made
// from the Filter's rules before the link, follows SetFirewall, and goes
// with the device, also when the link cannot be made.
func TestKernelFirewallWiring(t *testing.T) {
	ns, do := inKernelNS(t)
	list := func() string {
		out, err := exec.Command("ip", "netns", "exec", ns, "nft", "list", "ruleset").CombinedOutput()
		if err != nil {
			t.Fatalf("nft list ruleset: %v: %s", err, out)
		}
		return string(out)
	}
	r, err := filter.Compile([]*controlv1.FirewallRule{{PeerIp: "100.64.0.2", Direction: controlv1.Direction_DIRECTION_IN,
		Protocol: controlv1.Protocol_PROTOCOL_TCP, Ports: []*controlv1.PortRange{{Start: 22}}}})
	if err != nil {
		t.Fatal(err)
	}
	f := filter.New(r)
	cfg := Config{Mode: ModeKernel, Name: "kfwg0", PrivateKey: must1(keys.Generate()), Address: netip.MustParsePrefix("100.64.0.1/16"),
		Log: zaptest.NewLogger(t), Filter: f}
	if err := cfg.fill(); err != nil {
		t.Fatal(err)
	}
	table := nftfilter.TableName("kfwg0")

	var fw firewall
	do(func() { fw, err = kernelFirewall(cfg) })
	if err != nil || fw == nil {
		t.Fatalf("kernelFirewall: %v", err)
	}
	if got := list(); !strings.Contains(got, "table inet "+table) || !strings.Contains(got, "ip saddr @in4_0 tcp dport 22 return") || !strings.Contains(got, "100.64.0.2") {
		t.Fatalf("the Filter's rules are not in the table:\n%s", got)
	}
	d := &kernelDevice{name: "kfwg0", fw: fw}
	r2, _ := filter.Compile([]*controlv1.FirewallRule{{PeerIp: "100.64.0.3", Direction: controlv1.Direction_DIRECTION_OUT,
		Protocol: controlv1.Protocol_PROTOCOL_UDP}})
	if err := d.SetFirewall(r2); err != nil { // from this goroutine: the table keeps to its namespace
		t.Fatal(err)
	}
	if got := list(); strings.Contains(got, "100.64.0.2") || !strings.Contains(got, "ip daddr @out4_0 meta l4proto udp return") || !strings.Contains(got, "100.64.0.3") {
		t.Fatalf("SetFirewall did not replace the rules:\n%s", got)
	}
	if err := fw.Close(); err != nil {
		t.Fatal(err)
	}
	if got := list(); strings.Contains(got, table) {
		t.Fatalf("table left after Close:\n%s", got)
	}
	if err := (&kernelDevice{name: "kfwg0"}).SetFirewall(r2); !errors.Is(err, ErrNoFirewall) {
		t.Errorf("SetFirewall without a table: %v, want ErrNoFirewall", err)
	}

	// A filter that cannot be described cannot be enforced.
	opaque := cfg
	opaque.Filter = opaqueFilter{}
	do(func() { fw, err = kernelFirewall(opaque) })
	if !errors.Is(err, ErrNoFirewall) || fw != nil {
		t.Errorf("opaque filter: %v, %v; want ErrNoFirewall", fw, err)
	}

	// The whole kernel device: on this machine without the module the
	// link fails and the table must not stay; with the module, the table
	// lives as long as the device.
	var dev Device
	do(func() { dev, err = newKernel(t.Context(), cfg) })
	if err != nil {
		t.Logf("kernel mode here: %v", err)
		if got := list(); strings.Contains(got, table) {
			t.Fatalf("table left after kernel mode failed:\n%s", got)
		}
		return
	}
	if got := list(); !strings.Contains(got, "ip saddr @in4_0 tcp dport 22 return") || !strings.Contains(got, "100.64.0.2") {
		t.Errorf("kernel device without its rules:\n%s", got)
	}
	var closeErr error
	do(func() { closeErr = dev.Close() })
	if closeErr != nil {
		t.Error(closeErr)
	}
	if got := list(); strings.Contains(got, table) {
		t.Errorf("table left after Close:\n%s", got)
	}
}

func must1[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
