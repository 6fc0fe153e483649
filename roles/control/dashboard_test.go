package control

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/urfave/cli/v2"
)

// `meshd control --dashboard-listen` serves the dashboard on its own port
// with control's certificate, prints where, and takes the admin token.
func TestControlServesDashboard(t *testing.T) {
	dir := t.TempDir()
	out := &syncBuffer{}
	app := &cli.App{Name: "meshd", Writer: out, ErrWriter: out, Commands: []*cli.Command{Command()},
		ExitErrHandler: func(*cli.Context, error) {}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- app.RunContext(ctx, []string{"meshd", "control", "--log-level", "error", "--data", dir, "--listen", "127.0.0.1:0",
			"--public-url", "https://vpn.example.org:33073", "--dashboard-listen", "127.0.0.1:0", "--metrics-listen", ""})
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("control: %v", err)
		}
	}()
	re := regexp.MustCompile(`Dashboard: https://vpn\.example\.org:(\d+)/`)
	var port string
	deadline := time.After(20 * time.Second)
	for port == "" {
		if m := re.FindStringSubmatch(out.String()); m != nil {
			port = m[1]
			break
		}
		select {
		case err := <-done:
			done <- err
			t.Fatalf("control ended: %v\n%s", err, out.String())
		case <-deadline:
			t.Fatalf("no dashboard line:\n%s", out.String())
		case <-time.After(10 * time.Millisecond):
		}
	}
	c := &http.Client{Timeout: 10 * time.Second,
		Transport:     &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}, // control's self-signed certificate
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	defer c.CloseIdleConnections()
	base := "https://" + net.JoinHostPort("127.0.0.1", port)
	res, err := c.Get(base + "/signin")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusOK || !strings.Contains(string(body), `type="password"`) {
		t.Fatalf("sign-in page: %d %.300s", res.StatusCode, body)
	}
	token, err := os.ReadFile(filepath.Join(dir, "admin-token"))
	if err != nil {
		t.Fatal(err)
	}
	res, err = c.PostForm(base+"/signin", url.Values{"token": {strings.TrimSpace(string(token))}})
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusSeeOther || !strings.Contains(res.Header.Get("Set-Cookie"), "__Host-meshd_session=") {
		t.Fatalf("sign in: %d %v", res.StatusCode, res.Header)
	}
}

// A dashboard port that was given and is taken stops the start with a
// clear error.
func TestControlDashboardBusyPort(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	out, err := runControl(t, "--data", t.TempDir(), "--listen", "127.0.0.1:0", "--public-url", "https://vpn.example.org:33073",
		"--dashboard-listen", busy.Addr().String(), "--metrics-listen", "")
	var ec cli.ExitCoder
	if !errors.As(err, &ec) || ec.ExitCode() != 1 || !strings.Contains(err.Error(), "--dashboard-listen") {
		t.Fatalf("busy dashboard port: %v\n%s", err, out)
	}
}
