package admin

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"

	"meshd/internal/control/controltest"
	"meshd/internal/testutil"
	"meshd/internal/tlsconf"
)

// `meshd admin --control URL --token T --tls-pin P` works against any
// replica: the client checks the pin, not the name, so a replica at an
// address its certificate does not name answers like the first. (The
// forwarder stands for a second replica sharing store and certificate.)
func TestAdminReachesAnyReplica(t *testing.T) {
	h := controltest.NewHarness(t, 1)
	// 127.0.0.2: an address the test server's certificate does not name.
	other := testutil.Forward(t, "127.0.0.2:0", h.Server.Listener.Addr().String())
	pin := tlsconf.Pin(h.Server.Certificate().Raw)
	run := func(pin string) (string, error) {
		var out bytes.Buffer
		app := &cli.App{Name: "meshd", Writer: &out, ErrWriter: &out,
			Commands:       []*cli.Command{Command()}, // the real client, with pinning
			ExitErrHandler: func(*cli.Context, error) {}}
		err := app.Run([]string{"meshd", "admin", "--control", other.URL(), "--token", h.Boot.AdminToken, "--tls-pin", pin, "peers", "list"})
		return out.String(), err
	}
	out, err := run(pin)
	if err != nil || !strings.Contains(out, "agent-0") {
		t.Fatalf("admin through the other replica: %v\n%s", err, out)
	}
	if _, err := run("sha256:" + strings.Repeat("0", 64)); err == nil || !strings.Contains(err.Error(), "pin") {
		t.Fatalf("a wrong pin was accepted: %v", err)
	}
}

// A replica that starts on a network made by another has no join-token in
// its --data (the bootstrap key is kept by the first one only): its start
// says so without claiming the file was removed, and `meshd admin --data`
// there still finds control, as the start told the operator to run it.
func TestAdminDataDirOfLaterReplica(t *testing.T) {
	h := controltest.NewHarness(t, 1)
	dir := t.TempDir()
	b, err := h.Service.Bootstrap(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	if b.JoinCommand != "" || strings.Contains(b.Hint, "join-token was removed") || !strings.Contains(b.Hint, "setup-keys create") {
		t.Fatalf("a later replica's start: join %q, hint %q", b.JoinCommand, b.Hint)
	}
	out, code, msg := runAdmin(t, h, "--data", dir, "peers", "list")
	if code != 0 || !strings.Contains(out, "agent-0") {
		t.Fatalf("meshd admin --data on a later replica: exit %d %s\n%s", code, msg, out)
	}
}
