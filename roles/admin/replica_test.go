package admin

import (
	"bytes"
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
