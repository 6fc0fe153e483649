package agent

import (
	"bytes"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"

	"meshd/nat/netcheck/stuntest"
)

// runCLI runs one of this package's commands and returns its exit code and
// output.
func runCLI(t *testing.T, cmd *cli.Command, args ...string) (int, string) {
	t.Helper()
	var out bytes.Buffer
	app := &cli.App{Name: "meshd", Commands: []*cli.Command{cmd}, Writer: &out, ErrWriter: &out,
		ExitErrHandler: func(*cli.Context, error) {}}
	err := app.Run(append([]string{"meshd", cmd.Name}, args...))
	var ec cli.ExitCoder
	switch {
	case err == nil:
		return 0, out.String()
	case errors.As(err, &ec):
		return ec.ExitCode(), out.String() + err.Error()
	}
	return 1, out.String() + err.Error()
}

func TestNetcheckCommand(t *testing.T) {
	a := stuntest.Listen(t)
	code, out := runCLI(t, NetcheckCommand(), "--relay-url", "stun:"+a.String(), "--timeout", "1s")
	if code != 0 || !strings.Contains(out, "UDP: yes") || !strings.Contains(out, "unknown (one STUN server)") ||
		!strings.Contains(out, "stun:"+a.String()) {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	code, out = runCLI(t, NetcheckCommand(), "--json", "--relay-url", a.String(), "--timeout", "1s")
	if code != 0 || !strings.Contains(out, `"mapping_varies_by_dest": null`) || !strings.Contains(out, `"udp": true`) {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	// No relay given and no agent to ask.
	sock := filepath.Join(t.TempDir(), "none.sock")
	code, out = runCLI(t, NetcheckCommand(), "--socket", sock)
	if code != 1 || !strings.Contains(out, "pass --relay-url") || !strings.Contains(out, "no agent answers") {
		t.Fatalf("exit %d:\n%s", code, out)
	}
}

func TestPingCommandErrors(t *testing.T) {
	code, out := runCLI(t, PingCommand())
	if code != 2 || !strings.Contains(out, "meshd ping PEER") {
		t.Fatalf("no peer: exit %d: %s", code, out)
	}
	code, out = runCLI(t, PingCommand(), "--count", "0", "x")
	if code != 2 || !strings.Contains(out, "--count") {
		t.Fatalf("count 0: exit %d: %s", code, out)
	}
	sock := filepath.Join(t.TempDir(), "none.sock")
	code, out = runCLI(t, PingCommand(), "--socket", sock, "x")
	if code != 1 || !strings.Contains(out, "no agent answers") {
		t.Fatalf("no agent: exit %d: %s", code, out)
	}
}
