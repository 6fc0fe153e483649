//go:build linux

package agent

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
	xproxy "golang.org/x/net/proxy"

	"meshd/internal/agent"
	"meshd/internal/control"
	"meshd/internal/control/controltest"
	"meshd/internal/signal/signaltest"
	"meshd/internal/testutil"
	"meshd/internal/tlsconf"
	"meshd/nat/relay"
	"meshd/wg"
)

// TestRootlessAgentProxiesToAPeer runs the real meshd binary as user
// nobody, with no --state and no --socket (the defaults for a user who is
// not root), in netstack mode with --socks5, and fetches a page through
// that SOCKS5 proxy from a web server on another peer's overlay address.
func TestRootlessAgentProxiesToAPeer(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run the agent as nobody")
	}
	nobody, err := user.Lookup("nobody")
	if err != nil {
		t.Skipf("no user nobody: %v", err)
	}
	uid, _ := strconv.Atoi(nobody.Uid)
	gid, _ := strconv.Atoi(nobody.Gid)

	// The binary and a home directory nobody can use.
	dir, err := os.MkdirTemp("", "meshd-rootless-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	must(t, os.Chmod(dir, 0o755))
	bin := filepath.Join(dir, "meshd")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Dir = "../.."
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	home := filepath.Join(dir, "home")
	must(t, os.Mkdir(home, 0o700))
	must(t, os.Chown(home, uid, gid))

	// Control, signal and a relay on loopback; peer "web" in this process.
	secret := []byte("test turn secret, 32 bytes long!")
	rs, err := relay.New(relay.Options{Log: zaptest.NewLogger(t).Named("relay"), Secret: secret,
		PublicIP: netip.MustParseAddr("127.0.0.1"), ListenAddr: "127.0.0.1:0", Workers: 1})
	must(t, err)
	t.Cleanup(func() { rs.Close() })
	sig := signaltest.Start(t, signaltest.Options{})
	h := controltest.NewHarness(t, 0, controltest.WithOptions(func(o *control.Options) {
		o.SignalURL, o.SignalPin = sig.URL, sig.Pin
		o.Relays = control.RelayOptions{URLs: relay.URLs("127.0.0.1", int(rs.UDPAddr().Port()), 0), Secret: secret}
	}))
	pin := tlsconf.Pin(h.Server.Certificate().Raw)
	web, err := agent.New(agent.Options{StateDir: t.TempDir(), ControlURL: h.URL, Pin: pin, SetupKey: h.Boot.SetupKey,
		Hostname: "web", Device: wg.Config{Mode: wg.ModeNetstack, Name: "web"}, Clients: agent.RealClients(),
		IncludeLoopback: true, Log: zaptest.NewLogger(t).Named("web")})
	must(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); web.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	testutil.WaitFor(t, 15*time.Second, "web up", func() bool { return web.Device() != nil && web.Status().State == "up" })
	ln, err := web.Device().Net().ListenTCP(&net.TCPAddr{Port: 80})
	must(t, err)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello, nobody")
	}), ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	// The rootless agent.
	pl, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	socks := pl.Addr().String()
	pl.Close()
	var out bytes.Buffer
	cmd := exec.Command(bin, "agent", "--wg-mode", "netstack", "--control", h.URL, "--tls-pin", pin,
		"--setup-key", h.Boot.SetupKey, "--hostname", "rootless", "--port", "0", "--socks5", socks)
	cmd.Env = []string{"HOME=" + home, "PATH=/usr/bin:/bin"}
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
	must(t, cmd.Start())
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(15 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("agent output:\n%s", out.String())
		}
	})

	d, err := xproxy.SOCKS5("tcp", socks, nil, xproxy.Direct)
	must(t, err)
	tr := &http.Transport{Dial: d.Dial, DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 3 * time.Second}
	var body string
	testutil.WaitFor(t, 45*time.Second, "a page from web through the rootless agent's SOCKS5 proxy", func() bool {
		select {
		case err := <-exited:
			exited <- err
			t.Fatalf("the agent exited: %v\n%s", err, out.String())
		default:
		}
		resp, err := c.Get("http://web/")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		body = string(b)
		return resp.StatusCode == 200
	})
	if body != "hello, nobody" {
		t.Errorf("body %q", body)
	}
	// Its state and socket are in nobody's home, owned by nobody.
	for _, p := range []string{filepath.Join(home, ".local/state/meshd-agent"), filepath.Join(home, ".local/state/meshd-agent/meshd.sock")} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Errorf("%s: %v", p, err)
			continue
		}
		if st := fi.Sys().(*syscall.Stat_t); int(st.Uid) != uid {
			t.Errorf("%s is owned by uid %d, want nobody (%d)", p, st.Uid, uid)
		}
	}
}

func must(tb testing.TB, err error) {
	tb.Helper()
	if err != nil {
		tb.Fatal(err)
	}
}
