package agent

import (
	"context"
	"flag"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/urfave/cli/v2"
	"go.uber.org/zap/zaptest"

	"meshd/internal/agent"
	"meshd/internal/cliutil"
	"meshd/internal/dns"
	"meshd/internal/jointoken"
	"meshd/internal/memtrim"
	"meshd/wg"
	"meshd/wg/wgtest"
)

func ctxFor(t *testing.T, args ...string) *cli.Context {
	t.Helper()
	cmd := Command()
	set := flag.NewFlagSet("agent", flag.ContinueOnError)
	for _, f := range cmd.Flags {
		if err := f.Apply(set); err != nil {
			t.Fatal(err)
		}
	}
	if err := set.Parse(args); err != nil {
		t.Fatal(err)
	}
	return cli.NewContext(cli.NewApp(), set, nil)
}

func TestAgentFlags(t *testing.T) {
	pin := "sha256:" + strings.Repeat("ab", 32)
	tok := jointoken.Token{ControlURL: "https://c.example:443", Pin: pin, SetupKey: "K1"}.Encode()
	o, mode, err := agentOptions(ctxFor(t, "--join", tok, "--state", "/tmp/s", "--iface", "m1", "--port", "0", "--wg-mode", "netstack", "--socket-mode", "0660"))
	if err != nil {
		t.Fatal(err)
	}
	if o.ControlURL != "https://c.example:443" || o.Pin != pin || o.SetupKey != "K1" || o.StateDir != "/tmp/s" ||
		o.Device.Name != "m1" || o.Device.ListenPort != 0 || o.Device.Mode != wg.ModeNetstack || mode != 0o660 {
		t.Fatalf("options %+v mode %o", o, mode)
	}
	multi := jointoken.New([]string{"https://a.example:443", "https://b.example:443"}, pin, "K2").Encode()
	if o, _, err = agentOptions(ctxFor(t, "--join", multi)); err != nil || o.ControlURL != "https://a.example:443" ||
		!slices.Equal(o.ControlURLs, []string{"https://b.example:443"}) || o.SetupKey != "K2" {
		t.Fatalf("a token naming two replicas: %+v, %v", o, err)
	}
	o, _, err = agentOptions(ctxFor(t, "--control", "https://c:1", "--setup-key", " K \n")) // pasted with blanks
	if err != nil || o.SetupKey != "K" {
		t.Fatalf("setup key %q not trimmed: %v", o.SetupKey, err)
	}
	if o.Device.ListenPort != DefaultPort || o.StateDir != cliutil.AgentStateFor(os.Geteuid()) || o.Device.Mode != wg.ModeAuto {
		t.Fatalf("defaults: %+v %v", o, err)
	}
	if o.DNS.Disabled || !o.DNS.ConfigureOS || o.DNS.Listen.IsValid() {
		t.Fatalf("dns defaults: %+v", o.DNS)
	}
	o, _, err = agentOptions(ctxFor(t, "--control", "https://c:1", "--setup-key", "K", "--dns=false", "--dns-listen", "127.0.0.1:5353"))
	if err != nil || !o.DNS.Disabled || o.DNS.Listen.String() != "127.0.0.1:5353" || o.DNS.System != nil {
		t.Fatalf("dns flags: %+v %v", o.DNS, err)
	}
	o, _, err = agentOptions(ctxFor(t, "--control", "https://c:1", "--setup-key", "K", "--dns-fallback", "192.0.2.53,[2001:db8::53]:5353"))
	if err != nil || len(o.DNS.System) != 2 || o.DNS.System[0].String() != "192.0.2.53:53" || o.DNS.System[1].String() != "[2001:db8::53]:5353" {
		t.Fatalf("--dns-fallback: %+v %v", o.DNS.System, err)
	}
	o, _, err = agentOptions(ctxFor(t, "--control", "https://c:1", "--setup-key", "K", "--dns-fallback", "none"))
	if err != nil || o.DNS.System == nil || len(o.DNS.System) != 0 {
		t.Fatalf("--dns-fallback none: %#v %v", o.DNS.System, err)
	}
	for _, bad := range [][]string{
		{"--join", tok, "--control", "https://x:1"},
		{"--join", "nonsense"},
		{"--setup-key", "K"},
		{"--control", "https://c:1", "--tls-pin", "md5:00"},
		{"--port", "70000"},
		{"--wg-mode", "fast"},
		{"--socket-mode", "0400"},
		{"--socket-mode", "rw"},
		{"--control", "https://c:1", "--setup-key", "K", "--dns-listen", "localhost"},
		{"--control", "https://c:1", "--setup-key", "K", "--dns-fallback", "dns.example"},
	} {
		if _, _, err := agentOptions(ctxFor(t, bad...)); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
}

func TestMemTrimFlag(t *testing.T) {
	if d := ctxFor(t).Duration("mem-trim"); d != memtrim.DefaultQuiet {
		t.Fatalf("--mem-trim default %v, want %v", d, memtrim.DefaultQuiet)
	}
	if d := ctxFor(t, "--mem-trim", "0").Duration("mem-trim"); d != 0 {
		t.Fatalf("--mem-trim 0 read as %v", d)
	}
	// watchMemory keeps the engine's device constructor: the device it
	// makes is the one the engine gets.
	want := wgtest.New("m0", 51820)
	var o agent.Options
	o.NewDevice = func(context.Context, wg.Config) (wg.Device, error) { return want, nil }
	tr := watchMemory(&o, time.Second, zaptest.NewLogger(t))
	got, err := o.NewDevice(context.Background(), wg.Config{})
	if err != nil || got != wg.Device(want) || tr == nil {
		t.Fatalf("wrapped NewDevice returned %v, %v", got, err)
	}
}

// Without systemd-resolved the agent writes /etc/resolv.conf, keeping the
// original in its state directory, unless told not to.
func TestAgentResolvConfFlag(t *testing.T) {
	o, _, err := agentOptions(ctxFor(t, "--control", "https://c:1", "--setup-key", "K", "--state", "/tmp/s"))
	if err != nil || o.DNS.ResolvConf != dns.DefaultResolvConf || o.DNS.BackupDir != "/tmp/s" {
		t.Fatalf("default: resolv.conf %q, backup dir %q, %v; want %s kept in the state dir", o.DNS.ResolvConf, o.DNS.BackupDir, err, dns.DefaultResolvConf)
	}
	o, _, err = agentOptions(ctxFor(t, "--control", "https://c:1", "--setup-key", "K", "--dns-resolv-conf=false"))
	if err != nil || o.DNS.ResolvConf != "" {
		t.Fatalf("--dns-resolv-conf=false: resolv.conf %q, %v; want none", o.DNS.ResolvConf, err)
	}
}
