package admin

import (
	"bytes"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/urfave/cli/v2"

	"meshd/internal/control/controltest"
)

// runAdminStderr runs `meshd admin ARGS...` against h and returns stdout
// and stderr; it fails the test on a non-zero exit.
func runAdminStderr(t *testing.T, h *controltest.Harness, args ...string) (string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	app := &cli.App{Name: "meshd", Writer: &out, ErrWriter: &errOut,
		Commands:       []*cli.Command{NewCommand(Options{HTTPClient: h.HTTPClient()})},
		ExitErrHandler: func(*cli.Context, error) {}}
	if err := app.Run(append([]string{"meshd", "admin"}, append(auth(h), args...)...)); err != nil {
		t.Fatalf("meshd admin %s: %v", strings.Join(args, " "), err)
	}
	return out.String(), errOut.String()
}

// `account update --login-expiration` leaves setup-key peers alone and
// warns how many opted-in peers the new value expires now.
func TestAccountUpdateWarnsOfExpiredPeers(t *testing.T) {
	h := controltest.NewHarness(t, 2)
	out, warn := runAdminStderr(t, h, "account", "update", "--login-expiration", "2m")
	if warn != "" || !strings.Contains(out, "logins expired:") {
		t.Fatalf("no peer opted in, yet:\n%s\nstderr: %s", out, warn)
	}
	h.Clock.Advance(time.Hour)
	if out := ok(t, h, "peers", "get", "agent-0"); !regexp.MustCompile(`login expiration:\s+off\n`).MatchString(out) {
		t.Fatalf("a setup-key peer has login expiration on:\n%s", out)
	}
	ok(t, h, "peers", "update", "agent-0", "--login-expiration=true")
	_, warn = runAdminStderr(t, h, "account", "update", "--login-expiration", "5m")
	if !strings.Contains(warn, "1 opted-in peer(s) are expired now") || !strings.Contains(warn, "--login-expiration off") {
		t.Fatalf("no warning naming the expired peer count: %q", warn)
	}
	out, warn = runAdminStderr(t, h, "account", "update", "--login-expiration", "0")
	if warn != "" || !regexp.MustCompile(`logins expired:\s+0\n`).MatchString(out) {
		t.Fatalf("expiration off:\n%s\nstderr: %s", out, warn)
	}
}
