package signal

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"net"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/urfave/cli/v2"
	"go.uber.org/goleak"
	"go.uber.org/zap/zaptest"

	"meshd/internal/keys"
	"meshd/internal/metricstest"
	"meshd/internal/seal"
	"meshd/internal/signalclient"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

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

func freePort(tb testing.TB) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// waitPin waits until the command printed its TLS pin, or says why not (an
// early exit, with the command's error, or no pin within d).
func waitPin(out *syncBuffer, done <-chan error, d time.Duration) (string, error) {
	deadline := time.After(d)
	for i := 0; i < 10000; i++ {
		if m := pinLine.FindStringSubmatch(out.String()); m != nil {
			return m[1], nil
		}
		select {
		case <-time.After(10 * time.Millisecond):
		case err := <-done:
			return "", fmt.Errorf("meshd signal exited: %v; output %q", err, out.String())
		case <-deadline:
			return "", fmt.Errorf("no pin printed; output %q", out.String())
		}
	}
	return "", errors.New("no pin printed")
}

var pinLine = regexp.MustCompile(`signal TLS pin \(self-signed certificate\): (sha256:[0-9a-f]{64})`)

// controlKey makes a ticket key as control's, and returns it in the form
// --control-key takes and a function that issues tickets with it.
func controlKey(tb testing.TB) (string, func(keys.Key) []byte) {
	tb.Helper()
	pub, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		tb.Fatal(err)
	}
	k, _ := keys.FromBytes(pub)
	return k.String(), func(key keys.Key) []byte {
		t, err := seal.IssueTicket(priv, key, "acct", time.Now().Add(time.Hour))
		if err != nil {
			tb.Fatal(err)
		}
		return t
	}
}

func TestCommandServesPinnedTLSAndStops(t *testing.T) {
	ckey, issue := controlKey(t)
	var (
		addr, metrics, pin string
		out                *syncBuffer
		done               chan error
		cancel             context.CancelFunc
	)
	// Ports picked free may be taken before the command binds them (tests
	// run in parallel): a clash ends it at once, and it starts again on others.
	for attempt := 0; pin == "" && attempt < 5; attempt++ {
		addr, metrics = freePort(t), freePort(t)
		out = &syncBuffer{}
		app := &cli.App{Commands: []*cli.Command{Command()}, Writer: out, ErrWriter: out}
		var ctx context.Context
		ctx, cancel = context.WithCancel(context.Background())
		done = make(chan error, 1)
		go func(done chan<- error) {
			done <- app.RunContext(ctx, []string{"meshd", "signal", "--listen", addr, "--data", t.TempDir(), "--log-level", "warn", "--signal-heartbeat", "2s",
				"--metrics-listen", metrics, "--control-key", ckey})
		}(done)
		var err error
		if pin, err = waitPin(out, done, 10*time.Second); err != nil {
			cancel()
			if !strings.Contains(err.Error(), "address already in use") {
				t.Fatal(err)
			}
			t.Logf("a port was taken; starting again on others")
		}
	}
	if pin == "" {
		t.Fatal("meshd signal: every port tried was taken")
	}
	defer func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("meshd signal: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("meshd signal did not stop")
		}
	}()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	var deadline <-chan time.Time

	priv, _ := keys.Generate()
	ticket := issue(priv.Public())
	c, err := signalclient.New(signalclient.Options{URL: "https://" + addr, Pin: pin, Private: priv, Log: zaptest.NewLogger(t),
		MinBackoff: 20 * time.Millisecond, MaxBackoff: 100 * time.Millisecond, Ticket: func() []byte { return ticket }})
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan string, 1)
	c.OnMessage(func(_ keys.Key, p []byte) { got <- string(p) })
	cctx, stopClient := context.WithCancel(context.Background())
	clientDone := make(chan error, 1)
	go func() { clientDone <- c.Run(cctx) }()
	defer func() {
		stopClient()
		<-clientDone
	}()
	wctx, wcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer wcancel()
	if err := c.WaitConnected(wctx); err != nil {
		t.Fatalf("client did not register: %v (%+v)", err, c.State())
	}
	if err := c.Send(wctx, priv.Public(), []byte("loop")); err != nil {
		t.Fatal(err)
	}
	select {
	case p := <-got:
		if p != "loop" {
			t.Fatalf("got %q", p)
		}
	case <-wctx.Done():
		t.Fatal("no message")
	}
	other, _ := keys.Generate()
	if err := c.Send(wctx, other.Public(), []byte("x")); !errors.Is(err, signalclient.ErrNotConnected) {
		t.Fatalf("send to offline peer: %v", err)
	}

	// --metrics-listen counts what just happened.
	m := metricstest.Scrape(t, "http://"+metrics+"/metrics")
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"meshd_signal_registrations_total", []string{"result", "ok"}, 1},
		{"meshd_signal_connected_peers", nil, 1},
		{"meshd_signal_messages_forwarded_total", nil, 1},
		{"meshd_signal_messages_dropped_total", []string{"reason", "not_connected"}, 1},
	} {
		if got := m.Value(t, c.name, c.labels...); got != c.want {
			t.Errorf("%s %v = %g, want %g", c.name, c.labels, got, c.want)
		}
	}

	// A key without a ticket from this control does not register, and
	// says why.
	stranger, err := signalclient.New(signalclient.Options{URL: "https://" + addr, Pin: pin, Private: other, Log: zaptest.NewLogger(t),
		MinBackoff: 20 * time.Millisecond, MaxBackoff: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	sctx, stopStranger := context.WithCancel(context.Background())
	strangerDone := make(chan error, 1)
	go func() { strangerDone <- stranger.Run(sctx) }()
	defer func() {
		stopStranger()
		<-strangerDone
	}()
	deadline = time.After(10 * time.Second)
	for {
		if err := stranger.State().LastError; errors.Is(err, signalclient.ErrRefused) {
			if !strings.Contains(err.Error(), "no ticket") {
				t.Fatalf("refusal does not say why: %v", err)
			}
			break
		}
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatalf("a key without a ticket was not refused: %+v", stranger.State())
		}
	}
}

func TestBadFlagsAreRefused(t *testing.T) {
	ckey, _ := controlKey(t)
	for _, args := range [][]string{
		{"--control-key", ckey, "--signal-max-message-bytes", "10"},
		{}, // no --control-key
		{"--control-key", "not-a-key"},
		{"--control-key", ckey, "--signal-rate", "0"},
		{"--control-key", ckey, "--signal-heartbeat", "10ms"},
		{"--control-key", ckey, "--log-level", "loud"},
	} {
		app := &cli.App{Commands: []*cli.Command{Command()}, Writer: &syncBuffer{}, ErrWriter: &syncBuffer{}, ExitErrHandler: func(*cli.Context, error) {}}
		err := app.Run(append([]string{"meshd", "signal", "--insecure", "--listen", "127.0.0.1:0"}, args...))
		var ec cli.ExitCoder
		if !errors.As(err, &ec) || ec.ExitCode() != 2 {
			t.Errorf("%v: err %v, want exit code 2", args, err)
		}
	}
}
