package agent

import (
	"errors"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/urfave/cli/v2"
)

// TestAgentBusyPortExitsWithoutRegistering: `meshd agent` with its UDP
// port taken exits non-zero with a message naming --port, and never
// connects to control (so no peer is registered and no setup key used).
func TestAgentBusyPortExitsWithoutRegistering(t *testing.T) {
	ctl, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ctl.Close()
	var conns atomic.Int32
	go func() {
		for {
			c, err := ctl.Accept()
			if err != nil {
				return
			}
			conns.Add(1)
			c.Close()
		}
	}()
	busy, err := net.ListenPacket("udp4", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	port := busy.LocalAddr().(*net.UDPAddr).Port
	dir := t.TempDir()
	err = runAgent(ctxFor(t, "--control", "https://"+ctl.Addr().String(), "--setup-key", "K",
		"--state", filepath.Join(dir, "state"), "--socket", filepath.Join(dir, "sock"),
		"--wg-mode", "netstack", "--port", strconv.Itoa(port), "--dns=false", "--log-level", "error"))
	var ec cli.ExitCoder
	if !errors.As(err, &ec) || ec.ExitCode() == 0 {
		t.Fatalf("agent with a busy port: %v, want a non-zero exit", err)
	}
	if !strings.Contains(err.Error(), "--port") {
		t.Errorf("message %q does not name --port", err)
	}
	if n := conns.Load(); n != 0 {
		t.Errorf("the agent connected to control %d times before giving up", n)
	}
}
