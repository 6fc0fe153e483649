package control

import (
	"errors"
	"net"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"
)

// SSO flags: bad combinations are refused with what to do; a provider that
// does not answer at start does not stop control.
func TestControlSSOFlags(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		args []string
		msg  string
	}{
		{[]string{"--oidc-client-id", "meshd"}, "without --oidc-issuer"},
		{[]string{"--oidc-issuer", "https://idp.example.org"}, "needs --oidc-client-id"},
		{[]string{"--oidc-issuer", "idp.example.org", "--oidc-client-id", "meshd"}, "--oidc-issuer"},
	} {
		args := append([]string{"--data", dir, "--listen", "127.0.0.1:0", "--public-url", "https://x:1"}, c.args...)
		out, err := runControl(t, args...)
		var ec cli.ExitCoder
		if !errors.As(err, &ec) || ec.ExitCode() != 2 || !strings.Contains(err.Error(), c.msg) {
			t.Errorf("%v: err %v, want exit 2 with %q\n%s", c.args, err, c.msg, out)
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := "http://" + ln.Addr().String()
	ln.Close()
	out, err := runControl(t, "--data", dir, "--listen", "127.0.0.1:0", "--public-url", "https://x:1",
		"--oidc-issuer", down, "--oidc-client-id", "meshd")
	if err != nil || !strings.Contains(out, "meshd agent --join") {
		t.Fatalf("control with its provider down: %v\n%s", err, out)
	}
}
