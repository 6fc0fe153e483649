package relaytest

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pion/stun/v2"
)

// Coturn binaries; CI installs the Debian package coturn.
const (
	TurnServerBin = "turnserver"
	UClientBin    = "turnutils_uclient"
)

// NeedBinary skips the test when name is not on PATH.
func NeedBinary(tb testing.TB, name string) string {
	tb.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		tb.Skipf("%s not installed (apt-get install coturn); skipping the coturn interop test", name)
	}
	return p
}

// Coturn is a coturn turnserver on loopback using the TURN REST secret.
type Coturn struct {
	// Addr is its UDP and TCP listening address.
	Addr string
	// PortMin and PortMax are its relay ports.
	PortMin, PortMax int
	cmd              *exec.Cmd
	out              *syncBuffer
}

// Output is what the server logged so far.
func (c *Coturn) Output() string { return c.out.String() }

// StartCoturn runs turnserver on loopback with --use-auth-secret and
// --static-auth-secret=secret, realm, on free ports, waits until it
// answers STUN, and stops it (by PID) in cleanup. It skips the test when
// coturn is not installed.
func StartCoturn(tb testing.TB, secret, realm string) *Coturn {
	tb.Helper()
	NeedBinary(tb, TurnServerBin)
	// Ports picked free may be taken by the time turnserver binds them
	// (tests run in parallel): a clash is retried on other ports.
	var c *Coturn
	var err error
	for attempt := 0; attempt < 5; attempt++ {
		c, err = RunCoturn(secret, realm, FreePort(tb), min(FreePort(tb), 65535-50), tb.TempDir())
		if !errors.Is(err, ErrPortClash) {
			break
		}
		tb.Logf("turnserver: %v; trying other ports", err)
	}
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		c.Stop()
		if tb.Failed() {
			tb.Logf("turnserver output:\n%s", c.Output())
		}
	})
	return c
}

// ErrPortClash means turnserver could not bind a port it was given (another
// process took it after FreePort): try again with other ports.
var ErrPortClash = errors.New("relaytest: port taken")

// RunCoturn starts turnserver listening on 127.0.0.1:port, relaying on
// relayMin to relayMin+50, with its pid file in dir, and waits until it
// answers STUN. Stop it with Stop.
func RunCoturn(secret, realm string, port, relayMin int, dir string) (*Coturn, error) {
	bin, err := exec.LookPath(TurnServerBin)
	if err != nil {
		return nil, err
	}
	c := &Coturn{
		Addr:    net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
		PortMin: relayMin,
		PortMax: relayMin + 50,
		out:     &syncBuffer{},
	}
	args := []string{
		"-n", // no configuration file
		"--listening-ip=127.0.0.1",
		"--listening-port=" + strconv.Itoa(port),
		"--relay-ip=127.0.0.1",
		"--min-port=" + strconv.Itoa(c.PortMin),
		"--max-port=" + strconv.Itoa(c.PortMax),
		"--use-auth-secret",
		"--static-auth-secret=" + secret,
		"--realm=" + realm,
		"--allow-loopback-peers",
		"--no-tls", "--no-dtls", "--no-cli",
		"--no-software-attribute",
		"--pidfile=" + filepath.Join(dir, "turnserver.pid"),
		"--log-file=stdout", "--simple-log",
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = c.out, c.out
	cmd.Dir = dir
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	c.cmd = cmd
	err = WaitSTUN(c.Addr, 10*time.Second)
	// A STUN answer may come from whoever else holds the port: turnserver
	// logs a failed bind and goes on without that listener.
	if out := c.Output(); strings.Contains(out, "errno=98") || strings.Contains(out, "Address already in use") {
		c.Stop()
		return nil, fmt.Errorf("turnserver on %s: %w", c.Addr, ErrPortClash)
	}
	if err != nil {
		c.Stop()
		return nil, fmt.Errorf("turnserver on %s: %w\n%s", c.Addr, err, c.Output())
	}
	return c, nil
}

// Pid is the server's process id.
func (c *Coturn) Pid() int { return c.cmd.Process.Pid }

// Stop kills the server (by its PID) and waits for it.
func (c *Coturn) Stop() {
	_ = c.cmd.Process.Kill()
	_ = c.cmd.Wait()
}

// WaitSTUN polls addr with STUN binding requests until one is answered.
func WaitSTUN(addr string, timeout time.Duration) error {
	ua, err := net.ResolveUDPAddr("udp4", addr)
	if err != nil {
		return err
	}
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return err
	}
	defer conn.Close()
	deadline := time.Now().Add(timeout)
	buf := make([]byte, 1500)
	for attempt := 0; time.Now().Before(deadline) && attempt < 1000; attempt++ {
		req := stun.MustBuild(stun.TransactionID, stun.BindingRequest)
		if _, err := conn.WriteToUDP(req.Raw, ua); err != nil {
			return err
		}
		_ = conn.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		n, _, err := conn.ReadFromUDP(buf)
		if err != nil {
			continue
		}
		m := &stun.Message{Raw: append([]byte(nil), buf[:n]...)}
		if m.Decode() == nil && m.Type == stun.BindingSuccess && m.TransactionID == req.TransactionID {
			return nil
		}
	}
	return fmt.Errorf("no STUN answer within %s", timeout)
}

// FreePort returns a loopback port that was free for both UDP and TCP a
// moment ago (for programs that must be told a port).
func FreePort(tb testing.TB) int {
	tb.Helper()
	for attempt := 0; attempt < 50; attempt++ {
		u, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			tb.Fatal(err)
		}
		port := u.LocalAddr().(*net.UDPAddr).Port
		t, err := net.Listen("tcp4", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		u.Close()
		if err != nil {
			continue
		}
		t.Close()
		return port
	}
	tb.Fatal("no free port for UDP and TCP")
	return 0
}

// syncBuffer is a bytes.Buffer for a child's output read while it runs.
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
