//go:build linux

package lab

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// The meshd command-line contract the lab drives:
//
//	meshd all --data DIR --listen IP:33073 --public-url https://IP:33073 --stun-listen IP:3478
//	meshd agent --join TOKEN --state DIR --iface NAME --port N --socket PATH
//	meshd status --json --socket PATH
//	meshd admin --data DIR NOUN VERB --json [FLAGS] [ARGS]

// Ports of meshd all in the lab.
const (
	ControlPort = 33073
	STUNPort    = 3478
	AgentPort   = 51820
)

// BinaryEnv names a prebuilt meshd binary to use instead of building one.
const BinaryEnv = "MESHD_LAB_BINARY"

var (
	binOnce sync.Once
	binPath string
	binErr  error
	binDir  string
)

// Binary returns the path of the meshd binary, built once per test process
// from the module root (or taken from $MESHD_LAB_BINARY).
func Binary(tb testing.TB) string {
	tb.Helper()
	binOnce.Do(func() {
		if p := os.Getenv(BinaryEnv); p != "" {
			binPath = p
			return
		}
		start := time.Now()
		root, err := ModuleRoot()
		if err != nil {
			binErr = err
			return
		}
		if binDir, binErr = os.MkdirTemp("", "mlab-bin-"); binErr != nil {
			return
		}
		binPath = filepath.Join(binDir, "meshd")
		cmd := exec.Command("go", "build", "-o", binPath, ".")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			binErr = fmt.Errorf("lab: go build meshd: %v\n%s", err, out)
			return
		}
		tb.Logf("lab: built meshd in %.1fs", time.Since(start).Seconds())
	})
	if binErr != nil {
		tb.Fatal(binErr)
	}
	return binPath
}

// ModuleRoot is the directory of meshd's go.mod (for go build).
func ModuleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	gomod := strings.TrimSpace(string(out))
	if err != nil || gomod == "" || gomod == os.DevNull {
		return "", fmt.Errorf("lab: find the module root: %v", err)
	}
	return filepath.Dir(gomod), nil
}

func removeBinaryDir() {
	if binDir != "" {
		os.RemoveAll(binDir)
	}
}

// Must fails tb when err is not nil. A lab step that fails is a failure:
// a command that does not build, refuses its flags or exits early never
// turns into a skip.
func Must(tb testing.TB, err error) {
	tb.Helper()
	if err != nil {
		tb.Fatal(err)
	}
}

// Server is `meshd all` on a public host.
type Server struct {
	Host *Host
	Proc *Proc
	Data string // --data
	URL  string // --public-url
	Join string // the join token it printed
	// Args are more flags for `meshd all` (e.g. "--store", URL); Start
	// uses them.
	Args []string
	// NoJoinLine: Start waits for the "serving" log line instead of the join
	// line (a replica that finds the network made by another prints none).
	NoJoinLine bool

	bin string
}

var joinLine = regexp.MustCompile(`meshd agent --join (meshd1_[A-Za-z0-9_\-]+)`)

// StartServer runs `meshd all` on h and waits for its join line; it fails
// tb when the server does not start.
func StartServer(ctx context.Context, tb testing.TB, h *Host) *Server {
	tb.Helper()
	s := NewServer(tb, h)
	Must(tb, s.Start(ctx))
	return s
}

// NewServer prepares `meshd all` on h with its own data dir; Start runs it.
func NewServer(tb testing.TB, h *Host) *Server {
	tb.Helper()
	return &Server{
		Host: h,
		Data: filepath.Join(h.lab.dir, h.Name()+"-data"),
		URL:  fmt.Sprintf("https://%s:%d", h.IP(), ControlPort),
		bin:  Binary(tb),
	}
}

// servingLine is what `meshd all` prints once it serves, join line or not.
var servingLine = regexp.MustCompile(`(To manage the network here|signal ticket key)`)

// Start (re)starts `meshd all` with the same data dir and waits until it
// prints the join line.
func (s *Server) Start(ctx context.Context) error {
	ip := s.Host.IP().String()
	p, err := s.Host.Start("meshd-all", append([]string{s.bin, "all",
		"--data", s.Data,
		"--listen", fmt.Sprintf("%s:%d", ip, ControlPort),
		"--public-url", s.URL,
		"--stun-listen", fmt.Sprintf("%s:%d", ip, STUNPort),
	}, s.Args...)...)
	if err != nil {
		return err
	}
	s.Proc = p
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if s.NoJoinLine {
		if _, err := p.WaitOutput(ctx, servingLine); err != nil {
			return fmt.Errorf("meshd all on %s did not start serving: %w", s.Host.Name(), err)
		}
		return nil
	}
	m, err := p.WaitOutput(ctx, joinLine)
	if err != nil {
		return fmt.Errorf("meshd all on %s printed no join line: %w", s.Host.Name(), err)
	}
	s.Join = m[1]
	return nil
}

// Kill kills `meshd all` at once, as a crash or a pulled plug would.
func (s *Server) Kill() { s.Proc.Kill() }

// Admin runs `meshd admin --data DIR NOUN VERB --json ARGS...` on the
// server's host and returns its standard output.
func (s *Server) Admin(ctx context.Context, noun, verb string, args ...string) ([]byte, error) {
	return s.AdminVia(ctx, "", noun, verb, args...)
}

// AdminVia is Admin with the token and pin of s's data dir sent to the
// control at url instead (another replica of the same network); "" is s's
// own.
func (s *Server) AdminVia(ctx context.Context, url, noun, verb string, args ...string) ([]byte, error) {
	full := []string{s.bin, "admin", "--data", s.Data}
	if url != "" {
		full = append(full, "--control", url)
	}
	full = append(append(full, noun, verb, "--json"), args...)
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", s.Host.Namespace()}, full...)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	s.Host.lab.record("[" + s.Host.Name() + "] " + strings.Join(full, " "))
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("meshd admin %s %s %s: %v: %s%s", noun, verb, strings.Join(args, " "), err, out, stderr.String())
	}
	return out, nil
}

// AdminJSON is Admin that decodes the output into v.
func (s *Server) AdminJSON(ctx context.Context, v any, noun, verb string, args ...string) error {
	out, err := s.Admin(ctx, noun, verb, args...)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(out, v); err != nil {
		return fmt.Errorf("meshd admin %s %s: decode %q: %w", noun, verb, out, err)
	}
	return nil
}

// Agent is `meshd agent` on a host.
type Agent struct {
	Host   *Host
	Proc   *Proc
	State  string // --state
	Socket string // --socket
	Iface  string // --iface, unique on the machine (UAPI sockets are shared)
	Port   int    // --port
	Join   string
	// Args are more flags for `meshd agent`, after the ones above, e.g.
	// "--setup-key", KEY (joins with the token's URL and pin but KEY) or
	// "--wg-mode", "netstack". Launch uses them.
	Args []string

	bin string
	ip  netip.Addr
}

// StartAgents starts `meshd agent --join join` on every host at once and
// waits until each has an overlay address; it fails tb when one does not
// come up.
func StartAgents(ctx context.Context, tb testing.TB, join string, hosts ...*Host) []*Agent {
	tb.Helper()
	agents := make([]*Agent, len(hosts))
	for i, h := range hosts {
		agents[i] = NewAgent(tb, h, join)
		Must(tb, agents[i].Launch())
	}
	for _, a := range agents {
		Must(tb, a.WaitReady(ctx))
	}
	return agents
}

// NewAgent prepares an agent on h with its own state dir, socket and
// interface name; Launch starts it.
func NewAgent(tb testing.TB, h *Host, join string) *Agent {
	tb.Helper()
	l := h.lab
	iface := IfaceName()
	return &Agent{
		Host:   h,
		State:  filepath.Join(l.dir, h.Name()+"-state"),
		Socket: filepath.Join(l.sockDir(tb), h.Name()+".sock"),
		Iface:  iface,
		Port:   AgentPort,
		Join:   join,
		bin:    Binary(tb),
	}
}

// IfaceName returns a new network interface name, unique on the machine
// ("ml<pid>-<n>", at most 15 bytes for pids up to 7 digits): userspace
// WireGuard's UAPI sockets in /var/run/wireguard are shared by every
// namespace. Sweep removes the sockets of dead processes.
func IfaceName() string {
	seqMu.Lock()
	defer seqMu.Unlock()
	ifaceSeq++
	return fmt.Sprintf("ml%d-%d", os.Getpid(), ifaceSeq)
}

// sockDir is a short directory for unix sockets (108-byte path limit).
func (l *Lab) sockDir(tb testing.TB) string {
	tb.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.socks == "" {
		d := filepath.Join(os.TempDir(), l.id)
		if err := os.MkdirAll(d, 0o700); err != nil {
			tb.Fatalf("lab: %v", err)
		}
		l.socks = d
		l.closers = append(l.closers, func() { os.RemoveAll(d) })
	}
	return l.socks
}

// Launch starts the agent process without waiting for it.
func (a *Agent) Launch() error {
	args := append([]string{a.bin, "agent",
		"--join", a.Join,
		"--state", a.State,
		"--iface", a.Iface,
		"--port", strconv.Itoa(a.Port),
		"--socket", a.Socket,
	}, a.Args...)
	p, err := a.Host.Start("meshd-agent-"+a.Host.Name(), args...)
	if err != nil {
		return err
	}
	a.Proc = p
	return nil
}

// WaitReady waits up to 30 s until the agent's status has its overlay
// address.
func (a *Agent) WaitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	st, err := a.WaitStatus(ctx, "an overlay address", func(st *Status) bool { return st.Self.OverlayIP != "" })
	if err != nil {
		return err
	}
	ip, err := netip.ParseAddr(strings.Split(st.Self.OverlayIP, "/")[0])
	if err != nil {
		return fmt.Errorf("agent on %s: overlay_ip %q: %w", a.Host.Name(), st.Self.OverlayIP, err)
	}
	a.ip = ip
	return nil
}

// OverlayIP is the agent's overlay address, known after WaitReady.
func (a *Agent) OverlayIP() netip.Addr { return a.ip }

// Status runs `meshd status --json` against the agent's socket.
func (a *Agent) Status(ctx context.Context) (*Status, error) {
	cmd := exec.CommandContext(ctx, a.bin, "status", "--json", "--socket", a.Socket)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("meshd status on %s: %v: %s", a.Host.Name(), err, strings.TrimSpace(stderr.String()))
	}
	var st Status
	if err := json.Unmarshal(out, &st); err != nil {
		return nil, fmt.Errorf("meshd status on %s: decode: %w\n%s", a.Host.Name(), err, out)
	}
	return &st, nil
}

// WaitStatus polls the agent's status until ok returns true or ctx ends;
// what says what it waits for. It fails early when the agent exits.
func (a *Agent) WaitStatus(ctx context.Context, what string, ok func(*Status) bool) (*Status, error) {
	var last *Status
	var err error
	for i := 0; i < 100000; i++ { // bounded; ctx ends sooner
		if exited, _ := a.Proc.Exited(); exited {
			return nil, &ExitError{Proc: a.Proc, Err: a.Proc.err}
		}
		last, err = a.Status(ctx)
		if err == nil && ok(last) {
			return last, nil
		}
		if !Pause(ctx, 100*time.Millisecond) {
			break
		}
	}
	if err == nil {
		b, _ := json.Marshal(last)
		err = fmt.Errorf("last status %s", b)
	}
	return last, fmt.Errorf("agent on %s: no %s: %w", a.Host.Name(), what, err)
}

// Restart stops the agent and starts it again with the same state.
func (a *Agent) Restart(ctx context.Context) error {
	a.Proc.Stop()
	if err := a.Launch(); err != nil {
		return err
	}
	return a.WaitReady(ctx)
}

// Status is the JSON of `meshd status --json`.
type Status struct {
	State  string        `json:"state"`
	Self   SelfStatus    `json:"self"`
	Peers  []PeerStatus  `json:"peers"`
	Routes []RouteStatus `json:"routes"`
}

// RouteStatus is one route in Status.
type RouteStatus struct {
	Network string `json:"network"`
	Via     string `json:"via"`
	State   string `json:"state"`
	Message string `json:"message"`
}

// Route returns the route to network, or nil.
func (s *Status) Route(network string) *RouteStatus {
	for i := range s.Routes {
		if s.Routes[i].Network == network {
			return &s.Routes[i]
		}
	}
	return nil
}

// SelfStatus is the agent's own part of Status.
type SelfStatus struct {
	Name      string       `json:"name"`
	DNSName   string       `json:"dns_name"`
	OverlayIP string       `json:"overlay_ip"`
	PublicKey string       `json:"public_key"`
	Control   ServerStatus `json:"control"`
	Signal    ServerStatus `json:"signal"`
}

// ServerStatus is the agent's view of control or signal.
type ServerStatus struct {
	URL   string `json:"url"`
	State string `json:"state"`
	Error string `json:"error"`
}

// PeerStatus is one peer in Status.
type PeerStatus struct {
	Name            string     `json:"name"`
	DNSName         string     `json:"dns_name"`
	OverlayIP       string     `json:"overlay_ip"`
	PublicKey       string     `json:"public_key"`
	State           string     `json:"state"` // connected, connecting, idle
	Path            string     `json:"path"`  // direct, relayed, or empty
	LocalCandidate  *Candidate `json:"local_candidate"`
	RemoteCandidate *Candidate `json:"remote_candidate"`
	LatencyMS       float64    `json:"latency_ms"`
	LastHandshake   string     `json:"last_handshake"`
	RxBytes         Int64      `json:"rx_bytes"`
	TxBytes         Int64      `json:"tx_bytes"`
	// PostQuantum: a post-quantum pre-shared key is installed;
	// PostQuantumRotated: when it last rotated (RFC 3339).
	PostQuantum        bool   `json:"post_quantum"`
	PostQuantumRotated string `json:"post_quantum_rotated"`
}

// Candidate is an ICE candidate in Status.
type Candidate struct {
	Type    string `json:"type"`
	Address string `json:"address"`
}

// Int64 reads a JSON number or a string holding one (protojson writes
// int64 as a string).
type Int64 int64

// UnmarshalJSON implements json.Unmarshaler.
func (n *Int64) UnmarshalJSON(b []byte) error {
	s := strings.Trim(string(b), `"`)
	if s == "" || s == "null" {
		*n = 0
		return nil
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return fmt.Errorf("int64 %s: %w", b, err)
	}
	*n = Int64(v)
	return nil
}

// Peer returns the peer with the given overlay address, or nil.
func (s *Status) Peer(overlay netip.Addr) *PeerStatus {
	for i := range s.Peers {
		p := &s.Peers[i]
		if ip, err := netip.ParseAddr(strings.Split(p.OverlayIP, "/")[0]); err == nil && ip == overlay {
			return p
		}
	}
	return nil
}
