package all

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/urfave/cli/v2"

	adminv1 "meshd/api/admin/v1"
	"meshd/api/admin/v1/adminv1connect"
	"meshd/internal/cliutil"
	"meshd/internal/jointoken"
	"meshd/internal/rpcclient"
	"meshd/internal/tlsconf"
)

// syncBuffer is a bytes.Buffer safe for the server goroutine and the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func freePort(tb testing.TB, network string) string {
	tb.Helper()
	switch network {
	case "udp":
		c, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			tb.Fatal(err)
		}
		defer c.Close()
		return c.LocalAddr().String()
	default:
		l, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			tb.Fatal(err)
		}
		defer l.Close()
		return l.Addr().String()
	}
}

type running struct {
	out  *syncBuffer
	done chan error
	stop context.CancelFunc
}

// start runs `meshd all` in-process on loopback ports, with extra flags.
func start(tb testing.TB, dir, listen, stun string, extra ...string) *running {
	tb.Helper()
	app := &cli.App{Name: "meshd", Commands: []*cli.Command{Command()}, ExitErrHandler: func(*cli.Context, error) {}}
	cliutil.BindEnv(app.Flags, app.Commands)
	r := &running{out: &syncBuffer{}, done: make(chan error, 1)}
	app.Writer, app.ErrWriter = r.out, r.out
	ctx, cancel := context.WithCancel(context.Background())
	r.stop = cancel
	go func() {
		r.done <- app.RunContext(ctx, append([]string{"meshd", "all", "--data", dir, "--listen", listen,
			"--public-url", "https://" + listen, "--stun-listen", stun, "--relay-ports", "50000-50100",
			"--log-level", "warn"}, extra...))
	}()
	tb.Cleanup(func() { r.shutdown(tb) })
	return r
}

func (r *running) shutdown(tb testing.TB) {
	tb.Helper()
	if r.stop == nil {
		return
	}
	r.stop()
	r.stop = nil
	select {
	case err := <-r.done:
		if err != nil {
			tb.Errorf("meshd all exited with %v\n%s", err, r.out)
		}
	case <-time.After(15 * time.Second):
		tb.Errorf("meshd all did not stop within 15s")
	}
}

// testPorts are the loopback ports a test's `meshd all` listens on.
type testPorts struct{ listen, stun, metrics string }

// startFree starts `meshd all` on ports that were free a moment ago, and
// again on others when one was taken in between (tests run in parallel):
// `meshd all` binds its ports before it touches --data, so a clash ends it
// at once with nothing written. With metrics, --metrics-listen gets a port
// too. It returns once the join line is out.
func startFree(tb testing.TB, dir string, metrics bool, extra ...string) (*running, testPorts) {
	tb.Helper()
	for attempt := 0; attempt < 5; attempt++ {
		p := testPorts{listen: freePort(tb, "tcp"), stun: freePort(tb, "udp")}
		args := extra
		if metrics {
			p.metrics = freePort(tb, "tcp")
			args = append([]string{"--metrics-listen", p.metrics}, extra...)
		}
		r := start(tb, dir, p.listen, p.stun, args...)
		if err := r.untilJoin(20 * time.Second); err == nil {
			return r, p
		} else if !strings.Contains(err.Error(), "address already in use") {
			tb.Fatal(err)
		}
		tb.Logf("a port was taken; starting again on others")
	}
	tb.Fatal("meshd all: every port tried was taken")
	return nil, testPorts{}
}

// untilJoin waits until the join line is out, or returns why not; a run
// that ended is done (shutdown does nothing more).
func (r *running) untilJoin(d time.Duration) error {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if joinRE.MatchString(r.out.String()) {
			return nil
		}
		select {
		case err := <-r.done:
			r.stop()
			r.stop = nil
			return fmt.Errorf("meshd all exited early: %v\n%s", err, r.out)
		case <-time.After(20 * time.Millisecond):
		}
	}
	return fmt.Errorf("no join line within %v:\n%s", d, r.out)
}

var joinRE = regexp.MustCompile(`meshd agent --join (\S+)`)

// waitJoin waits for the join line and returns its token.
func (r *running) waitJoin(tb testing.TB) jointoken.Token {
	tb.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if m := joinRE.FindStringSubmatch(r.out.String()); m != nil {
			tok, err := jointoken.Decode(m[1])
			if err != nil {
				tb.Fatalf("join line does not decode: %v", err)
			}
			return tok
		}
		select {
		case err := <-r.done:
			tb.Fatalf("meshd all exited early: %v\n%s", err, r.out)
		case <-time.After(20 * time.Millisecond):
		}
	}
	tb.Fatalf("no join line within 20s:\n%s", r.out)
	return jointoken.Token{}
}

func healthz(tb testing.TB, url, pin string) {
	tb.Helper()
	c, err := rpcclient.New(url, pin)
	if err != nil {
		tb.Fatal(err)
	}
	defer c.CloseIdleConnections()
	resp, err := c.Get(url + "/healthz")
	if err != nil {
		tb.Fatalf("healthz over pinned TLS: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.TLS == nil {
		tb.Fatalf("healthz: status %d, tls %v", resp.StatusCode, resp.TLS != nil)
	}
}

func TestAllFirstStartAndRestart(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	r, p := startFree(t, dir, false)
	listen, stun := p.listen, p.stun
	tok := r.waitJoin(t)
	if tok.ControlURL != "https://"+listen || tok.SetupKey == "" {
		t.Fatalf("join token %+v", tok)
	}
	if _, err := tlsconf.ParsePin(tok.Pin); err != nil {
		t.Fatalf("join token pin: %v", err)
	}
	healthz(t, tok.ControlURL, tok.Pin)
	// A wrong pin is refused: the pin really is checked.
	if c, _ := tls.Dial("tcp", listen, mustClientConfig(t, "sha256:"+strings.Repeat("0", 64))); c != nil {
		c.Close()
		t.Fatal("a wrong pin was accepted")
	}
	token1, err := os.ReadFile(filepath.Join(dir, "admin-token"))
	if err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(filepath.Join(dir, "admin-token")); st.Mode().Perm() != 0o600 {
		t.Fatalf("admin-token mode %v", st.Mode().Perm())
	}
	checkServerStatus(t, tok, strings.TrimSpace(string(token1)))
	if !strings.Contains(r.out.String(), "created a new network") {
		t.Fatalf("first start did not say it created the network:\n%s", r.out)
	}
	r.shutdown(t)

	// The restart reuses the account, token, certificate and join line.
	r2 := start(t, dir, listen, stun)
	tok2 := r2.waitJoin(t)
	if !tok2.Equal(tok) {
		t.Fatalf("join token changed across a restart:\n%+v\n%+v", tok, tok2)
	}
	healthz(t, tok.ControlURL, tok.Pin)
	token2, _ := os.ReadFile(filepath.Join(dir, "admin-token"))
	if !bytes.Equal(token1, token2) {
		t.Fatal("admin token changed across a restart")
	}
	if strings.Contains(r2.out.String(), "created a new network") {
		t.Fatal("restart created a new network")
	}
}

func mustClientConfig(tb testing.TB, pin string) *tls.Config {
	tb.Helper()
	c, err := tlsconf.ClientConfig(pin)
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

func TestAllUnusableDataDir(t *testing.T) {
	file := filepath.Join(t.TempDir(), "not-a-dir")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	app := &cli.App{Name: "meshd", Commands: []*cli.Command{Command()}, ExitErrHandler: func(*cli.Context, error) {}}
	var out bytes.Buffer
	app.Writer, app.ErrWriter = &out, &out
	err := app.Run([]string{"meshd", "all", "--data", file, "--listen", freePort(t, "tcp")})
	ec, ok := err.(cli.ExitCoder)
	if !ok || ec.ExitCode() != 1 || !strings.Contains(err.Error(), "--data") {
		t.Fatalf("err = %v; want exit 1 naming --data", err)
	}
}

// checkServerStatus asks the admin API how the server is doing: in `all`,
// the status carries signal's and the relay's counters.
func checkServerStatus(tb testing.TB, tok jointoken.Token, adminToken string) {
	tb.Helper()
	hc, err := rpcclient.New(tok.ControlURL, tok.Pin)
	if err != nil {
		tb.Fatal(err)
	}
	defer hc.CloseIdleConnections()
	api := adminv1connect.NewAdminServiceClient(hc, tok.ControlURL)
	req := connect.NewRequest(&adminv1.GetServerStatusRequest{})
	req.Header().Set("Authorization", "Bearer "+adminToken)
	res, err := api.GetServerStatus(context.Background(), req)
	if err != nil {
		tb.Fatalf("server status: %v", err)
	}
	st := res.Msg
	if st.Signal == nil || st.Relay == nil || st.Peers != 0 || st.Version == "" {
		tb.Fatalf("server status %v: want signal and relay counters, no peers", st)
	}
	if len(st.Relay.Urls) != 4 || !strings.HasPrefix(st.Relay.Urls[3], "turns:") {
		tb.Fatalf("relay urls %v: want stun, turn udp, turn tcp, turns", st.Relay.Urls)
	}
	bad := connect.NewRequest(&adminv1.GetServerStatusRequest{})
	bad.Header().Set("Authorization", "Bearer wrong")
	if _, err := api.GetServerStatus(context.Background(), bad); connect.CodeOf(err) != connect.CodeUnauthenticated {
		tb.Fatalf("a wrong admin token: err = %v, want unauthenticated", err)
	}
}

// A second server on busy ports fails before it writes anything to its
// --data: no database, certificate or tokens of a network nobody can use;
// the error names the port and the flag that changes it.
func TestAllBusyPortCreatesNothing(t *testing.T) {
	busyTCP, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busyTCP.Close()
	busyUDP, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busyUDP.Close()
	for _, tc := range []struct {
		name, listen, stun, flag string
	}{
		{"https port", busyTCP.Addr().String(), freePort(t, "udp"), "--listen"},
		{"stun port", freePort(t, "tcp"), busyUDP.LocalAddr().String(), "--stun-listen"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "data")
			app := &cli.App{Name: "meshd", Commands: []*cli.Command{Command()}, ExitErrHandler: func(*cli.Context, error) {}}
			var out bytes.Buffer
			app.Writer, app.ErrWriter = &out, &out
			err := app.Run([]string{"meshd", "all", "--data", dir, "--listen", tc.listen, "--public-url", "https://" + tc.listen,
				"--stun-listen", tc.stun, "--log-level", "warn"})
			_, port, _ := net.SplitHostPort(map[bool]string{true: tc.listen, false: tc.stun}[tc.flag == "--listen"])
			if err == nil || !strings.Contains(err.Error(), port) || !strings.Contains(err.Error(), tc.flag) {
				t.Fatalf("err = %v; want it to name port %s and %s", err, port, tc.flag)
			}
			for _, f := range []string{"meshd.db", "tls.crt", "tls.key", "admin-token", "join-token"} {
				if _, err := os.Stat(filepath.Join(dir, f)); err == nil {
					t.Errorf("%s written although the server could not start", f)
				}
			}
			if strings.Contains(out.String(), "created a new network") {
				t.Errorf("a network was created:\n%s", out.String())
			}
		})
	}
}
