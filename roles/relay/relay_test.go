package relay

import (
	"bytes"
	"context"
	"crypto/tls"
	"flag"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/urfave/cli/v2"
	"go.uber.org/goleak"
	"go.uber.org/zap/zaptest"

	"meshd/internal/cliutil"
	"meshd/nat/relay/relaytest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const secret = "roles-relay-test-secret"

// app wraps Command the way main does (env bindings included).
func app(out io.Writer) *cli.App {
	a := &cli.App{Name: "meshd", Commands: []*cli.Command{Command()}, Writer: out, ErrWriter: out,
		ExitErrHandler: func(*cli.Context, error) {}} // return errors, do not exit
	cliutil.BindEnv(a.Flags, a.Commands)
	return a
}

// TestCommand runs `meshd relay` on loopback with TURN over TLS and
// metrics, allocates through it over UDP and TLS, relays, reads the bytes
// on /metrics and stops it.
func TestCommand(t *testing.T) {
	secretFile := filepath.Join(t.TempDir(), "turn-secret")
	if err := os.WriteFile(secretFile, []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	hp := func(p int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(p)) }
	var (
		port, tlsPort, metricsPort int
		out                        *lockedBuffer
		done                       chan error
		cancel                     context.CancelFunc
	)
	// Ports picked free may be taken before the command binds them (tests
	// run in parallel): a clash ends it at once, and it starts again on
	// others.
	for attempt := 0; ; attempt++ {
		if attempt == 5 {
			t.Fatal("meshd relay: every port tried was taken")
		}
		port, tlsPort, metricsPort = relaytest.FreePort(t), relaytest.FreePort(t), relaytest.FreePort(t)
		var ctx context.Context
		ctx, cancel = context.WithCancel(context.Background())
		out, done = &lockedBuffer{}, make(chan error, 1)
		go func(out io.Writer, done chan<- error) {
			done <- app(out).RunContext(ctx, []string{"meshd", "relay",
				"--stun-listen", hp(port),
				"--relay-ip", "127.0.0.1",
				"--relay-ports", "40000-40100",
				"--turn-secret-file", secretFile,
				"--turn-tls-listen", hp(tlsPort),
				"--data", t.TempDir(),
				"--metrics-listen", hp(metricsPort),
				"--log-level", "warn",
			})
		}(out, done)
		err := relaytest.WaitSTUN(hp(port), 10*time.Second)
		select {
		case exit := <-done: // a bind failure ends the command within milliseconds
			cancel()
			if exit != nil && strings.Contains(exit.Error(), "address already in use") {
				t.Logf("a port was taken (%v); starting again on others", exit)
				continue
			}
			t.Fatalf("meshd relay exited: %v\n%s", exit, out.String())
		case <-time.After(200 * time.Millisecond):
		}
		if err != nil {
			cancel()
			t.Fatal(err)
		}
		break
	}
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			cancel()
			if err := <-done; err != nil {
				t.Errorf("meshd relay: %v\n%s", err, out.String())
			}
		}
	}
	defer stop()

	c := relaytest.Credential([]byte(secret), "peer", time.Hour)
	a, err := relaytest.Allocate(t, hp(port), relaytest.UDP, c, nil)
	if err != nil {
		t.Fatal(err)
	}
	if p := a.RelayAddr().Port; p < 40000 || p > 40100 {
		t.Fatalf("relayed port %d outside --relay-ports", p)
	}
	b, err := relaytest.Allocate(t, hp(tlsPort), relaytest.TLS, c, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	relaytest.Exchange(t, a, b, 20, 1280)

	resp, err := http.Get("http://" + hp(metricsPort) + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`meshd_relay_allocations{transport="udp"} 1`, `meshd_relay_allocations{transport="tls"} 1`, `meshd_relay_users 1`} {
		if !strings.Contains(string(body), want) {
			t.Fatalf("/metrics lacks %q:\n%s", want, body)
		}
	}
	if !strings.Contains(string(body), `meshd_relay_bytes_total{direction="to_peer"} `) || strings.Contains(string(body), `meshd_relay_bytes_total{direction="to_peer"} 0`) {
		t.Fatalf("/metrics shows no bytes relayed:\n%s", body)
	}
	if !strings.Contains(out.String(), "relay TLS pin (self-signed certificate): sha256:") {
		t.Fatalf("no pin printed:\n%s", out.String())
	}
	a.Close()
	b.Close()
	stop()
	if err := relaytest.WaitSTUN(hp(port), 200*time.Millisecond); err == nil {
		t.Fatal("relay still answers after its context ended")
	}
}

func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--relay-ports", "60000-50000"}, "--relay-ports"},
		{[]string{"--relay-ports", "abc"}, "--relay-ports"},
		{[]string{"--relay-ip", "2001:db8::1"}, "--relay-ip"},
		{[]string{"--relay-ip", "nonsense"}, "--relay-ip"},
		{[]string{"--stun-listen", "3478"}, "--stun-listen"},
		{[]string{"--turn-user-quota", "0"}, "--turn-user-quota"},
		{[]string{"--turn-max-lifetime", "1s"}, "--turn-max-lifetime"},
		{[]string{"--relay-allow-peer", "10.0.0.1"}, "--relay-allow-peer"},
	} {
		set := flag.NewFlagSet("relay", flag.ContinueOnError)
		for _, f := range Flags() {
			if err := f.Apply(set); err != nil {
				t.Fatal(err)
			}
		}
		if err := set.Parse(tc.args); err != nil {
			t.Fatal(err)
		}
		_, err := ConfigFromFlags(cli.NewContext(nil, set, nil))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: err = %v, want one naming %s", tc.args, err, tc.want)
		}
	}
}

func TestCommandNeedsSecret(t *testing.T) {
	var out bytes.Buffer
	err := app(&out).Run([]string{"meshd", "relay", "--relay-ip", "127.0.0.1", "--stun-listen", "127.0.0.1:0"})
	if err == nil || !strings.Contains(err.Error(), "--turn-secret") {
		t.Fatalf("err = %v, want one asking for --turn-secret", err)
	}
	err = app(&out).Run([]string{"meshd", "relay", "--relay-ip", "127.0.0.1", "--turn-secret", "short"})
	if err == nil || !strings.Contains(err.Error(), "shorter than 16") {
		t.Fatalf("err = %v, want one about a short secret", err)
	}
}

func TestStartForAll(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	s, err := Start(ctx, Config{Listen: "127.0.0.1:0", PublicIP: mustIP("127.0.0.1"), Secret: []byte(secret)}, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := relaytest.Allocate(t, s.UDPAddr().String(), relaytest.UDP, relaytest.Credential([]byte(secret), "x", time.Hour), nil); err != nil {
		t.Fatal(err)
	}
	cancel()
	deadline := time.Now().Add(10 * time.Second)
	for relaytest.WaitSTUN(s.UDPAddr().String(), 50*time.Millisecond) == nil {
		if time.Now().After(deadline) {
			t.Fatal("relay still serving after ctx ended")
		}
	}
}

func TestParsePortRange(t *testing.T) {
	for in, want := range map[string][2]uint16{"49152-65535": {49152, 65535}, "3478": {3478, 3478}, " 10 - 20 ": {10, 20}} {
		lo, hi, err := ParsePortRange(in)
		if err != nil || lo != want[0] || hi != want[1] {
			t.Errorf("ParsePortRange(%q) = %d, %d, %v", in, lo, hi, err)
		}
	}
	for _, in := range []string{"0-10", "10-5", "1-70000", "a-b", ""} {
		if _, _, err := ParsePortRange(in); err == nil {
			t.Errorf("ParsePortRange(%q) succeeded", in)
		}
	}
}

func mustIP(s string) netip.Addr { return netip.MustParseAddr(s) }

func TestAllowPeerFlag(t *testing.T) {
	set := flag.NewFlagSet("relay", flag.ContinueOnError)
	for _, f := range Flags() {
		if err := f.Apply(set); err != nil {
			t.Fatal(err)
		}
	}
	if err := set.Parse([]string{"--relay-allow-peer", "10.0.0.0/8", "--relay-allow-peer", "192.168.1.7/24"}); err != nil {
		t.Fatal(err)
	}
	cfg, err := ConfigFromFlags(cli.NewContext(nil, set, nil))
	if err != nil {
		t.Fatal(err)
	}
	want := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.168.1.0/24")}
	if !slices.Equal(cfg.AllowPeers, want) {
		t.Fatalf("AllowPeers = %v, want %v", cfg.AllowPeers, want)
	}
}

// lockedBuffer is a bytes.Buffer that the command writes while the test
// reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
