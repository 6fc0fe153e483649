// Package pgtest starts a real PostgreSQL server for tests: Debian's
// binaries, run as user postgres in a temporary directory, on a free port,
// stopped and removed when the test ends. Replicas share their state in
// PostgreSQL, so the code that does so is tested against the real engine
// (LISTEN/NOTIFY, now(), ON CONFLICT) rather than a fake that would agree
// with our mistakes. Only tests import it.
//
// It uses github.com/jackc/pgx/v5 (the driver the store uses) to create
// and drop databases and to check that the server accepts connections.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// RequireEnv is the environment variable that turns a skip (no PostgreSQL
// binaries, not root) into a failure: CI sets it to 1 so that a broken
// install cannot pass as skipped tests.
const RequireEnv = "MESHD_REQUIRE_PG"

// User is the superuser of every server pgtest starts.
const User = "meshd"

// Timeouts bound every wait on the server.
const (
	startTimeout = 60 * time.Second
	stopTimeout  = 30 * time.Second
	cmdTimeout   = 90 * time.Second
)

// Options configure Start.
type Options struct {
	// Netns runs the server inside this network namespace (ip netns exec);
	// it must exist. The unix socket (used for NewDatabase) is reachable
	// from any namespace.
	Netns string
	// ListenAddr is the IP address the server listens on (default
	// 127.0.0.1). The port is chosen free at Start and kept across
	// Stop/Start.
	ListenAddr string
}

// Server is one running (or stopped) PostgreSQL server.
type Server struct {
	opts     Options
	bin      string // directory of initdb, pg_ctl, postgres
	dir      string // temporary directory: data/, the socket, logs
	host     string
	port     int
	password string
	uid, gid int

	watchdog *os.File // closing it (or our death) makes the watchdog clean up

	mu      sync.Mutex
	running bool
	dbSeq   atomic.Int64
}

// Start initialises and starts a server for tb; tb's cleanup stops it and
// removes its directory. Without PostgreSQL or root it skips tb, or fails
// it when MESHD_REQUIRE_PG=1.
func Start(tb testing.TB, opts Options) *Server {
	tb.Helper()
	if reason := unavailable(); reason != "" {
		skipOrFail(tb, reason)
	}
	s, err := start(opts)
	if err != nil {
		tb.Fatalf("pgtest: %v", err)
	}
	tb.Cleanup(func() {
		if err := s.Close(); err != nil {
			tb.Errorf("pgtest: %v", err)
		}
	})
	return s
}

var shared struct {
	once   sync.Once
	s      *Server
	reason string // skip reason
	err    error
}

// Shared returns one server per test binary, started on first use, so
// that a package's tests pay initdb once and take a database each with
// NewDatabase. It must not be stopped by a test. It is stopped and
// removed when the test binary exits (a watchdog process notices the
// exit), since tests have no hook that runs after the last one.
func Shared(tb testing.TB) *Server {
	tb.Helper()
	shared.once.Do(func() {
		if shared.reason = unavailable(); shared.reason != "" {
			return
		}
		shared.s, shared.err = start(Options{})
	})
	if shared.reason != "" {
		skipOrFail(tb, shared.reason)
	}
	if shared.err != nil {
		tb.Fatalf("pgtest: shared server: %v", shared.err)
	}
	return shared.s
}

func skipOrFail(tb testing.TB, reason string) {
	tb.Helper()
	if os.Getenv(RequireEnv) == "1" {
		tb.Fatalf("pgtest: %s (and %s=1 requires PostgreSQL)", reason, RequireEnv)
	}
	tb.Skipf("pgtest: %s (set %s=1 to fail instead)", reason, RequireEnv)
}

// unavailable says why no server can be started here, or "".
func unavailable() string {
	if runtime.GOOS != "linux" {
		return "PostgreSQL tests run on Linux only"
	}
	if os.Geteuid() != 0 {
		return "not root (initdb and pg_ctl run as user postgres)"
	}
	if _, err := binDir(); err != nil {
		return err.Error()
	}
	if _, err := user.Lookup("postgres"); err != nil {
		return "no user postgres: install the postgresql package"
	}
	for _, tool := range []string{"runuser", "ip"} {
		if _, err := exec.LookPath(tool); err != nil {
			return tool + " not found"
		}
	}
	return ""
}

// binDir finds PostgreSQL's server binaries: $MESHD_PG_BIN, or the newest
// /usr/lib/postgresql/N/bin.
func binDir() (string, error) {
	if d := os.Getenv("MESHD_PG_BIN"); d != "" {
		return d, checkBin(d)
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return versionOf(dirs[i]) > versionOf(dirs[j]) })
	for _, d := range dirs {
		if checkBin(d) == nil {
			return d, nil
		}
	}
	return "", errors.New("no PostgreSQL binaries in /usr/lib/postgresql/*/bin: install the postgresql package or set MESHD_PG_BIN")
}

func versionOf(dir string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(dir)))
	return n
}

func checkBin(d string) error {
	for _, b := range []string{"initdb", "pg_ctl", "postgres"} {
		if _, err := os.Stat(filepath.Join(d, b)); err != nil {
			return fmt.Errorf("%s missing in %s", b, d)
		}
	}
	return nil
}

func start(opts Options) (s *Server, err error) {
	if opts.ListenAddr == "" {
		opts.ListenAddr = "127.0.0.1"
	}
	if net.ParseIP(opts.ListenAddr) == nil {
		return nil, fmt.Errorf("listen address %q is no IP address", opts.ListenAddr)
	}
	bin, err := binDir()
	if err != nil {
		return nil, err
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, err
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	sweepStale()
	dir, err := os.MkdirTemp("/tmp", "meshd-pg-")
	if err != nil {
		return nil, err
	}
	s = &Server{opts: opts, bin: bin, dir: dir, host: opts.ListenAddr, password: randHex(16), uid: uid, gid: gid}
	defer func() {
		if err != nil {
			_ = s.Close()
		}
	}()
	if err := s.startWatchdog(); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "owner.pid"), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		return nil, err
	}
	if err := os.Chown(dir, uid, gid); err != nil {
		return nil, fmt.Errorf("chown %s: %w", dir, err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return nil, err
	}
	pw := filepath.Join(dir, "pwfile")
	if err := os.WriteFile(pw, []byte(s.password+"\n"), 0o600); err != nil {
		return nil, err
	}
	if err := os.Chown(pw, uid, gid); err != nil {
		return nil, err
	}
	if err := s.run(false, filepath.Join(bin, "initdb"), "-D", s.dataDir(), "-U", User, "--pwfile="+pw,
		"--auth-local=trust", "--auth-host=scram-sha-256", "--no-locale", "-E", "UTF8", "--no-sync"); err != nil {
		return nil, fmt.Errorf("initdb: %w", err)
	}
	conf := fmt.Sprintf("listen_addresses = '%s'\nunix_socket_directories = '%s'\n"+
		"fsync = off\nsynchronous_commit = off\nfull_page_writes = off\nmax_connections = 300\n"+
		"shared_buffers = 32MB\ninclude 'meshd-port.conf'\n", opts.ListenAddr, dir)
	hba := "local all all trust\nhost all all 0.0.0.0/0 scram-sha-256\nhost all all ::/0 scram-sha-256\n"
	if err := appendFile(filepath.Join(s.dataDir(), "postgresql.conf"), conf); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(s.dataDir(), "pg_hba.conf"), []byte(hba), 0o600); err != nil {
		return nil, err
	}
	// A port that was free a moment ago may be taken by another test
	// binary before postgres binds it: try a few.
	for attempt := 0; ; attempt++ {
		if s.port, err = freePort(); err != nil {
			return nil, err
		}
		portConf := filepath.Join(s.dataDir(), "meshd-port.conf")
		if err := os.WriteFile(portConf, []byte(fmt.Sprintf("port = %d\n", s.port)), 0o644); err != nil {
			return nil, err
		}
		if err := os.Chown(portConf, uid, gid); err != nil {
			return nil, err
		}
		if err = s.Start(); err == nil {
			return s, nil
		}
		if attempt == 2 {
			return nil, err
		}
	}
}

// Close stops the server and removes its directory. Start's cleanup calls
// it; never call it on the Shared server.
func (s *Server) Close() error {
	err := s.Stop()
	if s.watchdog != nil {
		_ = s.watchdog.Close()
	}
	if rerr := os.RemoveAll(s.dir); rerr != nil && err == nil {
		err = rerr
	}
	return err
}

// startWatchdog starts a shell that waits for EOF on its stdin (this
// process closing it, or exiting, even by a crash or os.Exit), then stops
// the server and removes its directory: the cleanup of last resort.
func (s *Server) startWatchdog() error {
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	defer r.Close()
	script := `read _ ; runuser -u postgres -- "$0" stop -D "$1" -m immediate -w -t 20 >/dev/null 2>&1; rm -rf "$2"`
	cmd := exec.Command("/bin/sh", "-c", script, filepath.Join(s.bin, "pg_ctl"), s.dataDir(), s.dir)
	cmd.Stdin = r
	cmd.SysProcAttr = ownGroup() // not killed with our process group
	if err := cmd.Start(); err != nil {
		w.Close()
		return fmt.Errorf("watchdog: %w", err)
	}
	go func() { _ = cmd.Wait() }()
	s.watchdog = w
	return nil
}

// sweepStale removes directories of earlier test binaries that died
// without their watchdog cleaning up (a SIGKILL of both): only when the
// owning test binary and the server are both gone.
func sweepStale() {
	dirs, _ := filepath.Glob("/tmp/meshd-pg-*")
	for _, d := range dirs {
		owner, err := readPID(filepath.Join(d, "owner.pid"))
		if err != nil || alive(owner) {
			continue
		}
		if pm, err := readPID(filepath.Join(d, "data", "postmaster.pid")); err == nil && alive(pm) {
			continue
		}
		_ = os.RemoveAll(d)
	}
}

func readPID(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	return strconv.Atoi(strings.TrimSpace(line))
}

func alive(pid int) bool {
	return pid > 0 && signal(pid, 0) == nil
}

func (s *Server) dataDir() string { return filepath.Join(s.dir, "data") }

// Start starts the stopped server again, on the same port with the same
// data. It returns once the server accepts connections.
func (s *Server) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.running {
		return nil
	}
	log := filepath.Join(s.dir, "postgres.log")
	err := s.run(s.opts.Netns != "", filepath.Join(s.bin, "pg_ctl"), "start", "-D", s.dataDir(), "-l", log,
		"-w", "-t", strconv.Itoa(int(startTimeout/time.Second)))
	if err != nil {
		tail, _ := os.ReadFile(log)
		if len(tail) > 2000 {
			tail = tail[len(tail)-2000:]
		}
		return fmt.Errorf("pg_ctl start: %w; server log ends:\n%s", err, tail)
	}
	s.running = true
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	for {
		conn, err := pgx.Connect(ctx, s.socketDSN("postgres"))
		if err == nil {
			_ = conn.Close(ctx)
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("server started but refuses connections: %w", err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Stop stops the server (fast shutdown: connections are cut, data kept);
// Start brings it back. A server that does not stop in time is killed.
func (s *Server) Stop() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	pid, pidErr := readPID(filepath.Join(s.dataDir(), "postmaster.pid"))
	if pidErr != nil {
		s.running = false
		return nil // never started, or already stopped
	}
	err := s.run(false, filepath.Join(s.bin, "pg_ctl"), "stop", "-D", s.dataDir(), "-m", "fast", "-w",
		"-t", strconv.Itoa(int(stopTimeout/time.Second)))
	if err != nil {
		err = s.run(false, filepath.Join(s.bin, "pg_ctl"), "stop", "-D", s.dataDir(), "-m", "immediate", "-w", "-t", "10")
	}
	if err != nil && alive(pid) {
		_ = signal(pid, sigkill)
		deadline := time.Now().Add(10 * time.Second)
		for alive(pid) && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if alive(pid) {
			return fmt.Errorf("postgres (pid %d) survives SIGKILL", pid)
		}
		_ = os.Remove(filepath.Join(s.dataDir(), "postmaster.pid"))
	}
	s.running = false
	return nil
}

// run runs a PostgreSQL binary as user postgres (inside the namespace
// when netns), its output going to a file (the server it may start must
// not hold a pipe of ours open).
func (s *Server) run(netns bool, name string, args ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	argv := append([]string{"-u", "postgres", "--", name}, args...)
	prog := "runuser"
	if netns {
		argv = append([]string{"netns", "exec", s.opts.Netns, "runuser"}, argv...)
		prog = "ip"
	}
	out, err := os.CreateTemp(s.dir, "cmd-*.log")
	if err != nil {
		return err
	}
	defer os.Remove(out.Name())
	defer out.Close()
	cmd := exec.CommandContext(ctx, prog, argv...)
	cmd.Dir = s.dir
	cmd.Stdout, cmd.Stderr = out, out
	cmd.Env = cleanEnv()
	if err := cmd.Run(); err != nil {
		msg, _ := os.ReadFile(out.Name())
		return fmt.Errorf("%s %s: %w: %s", filepath.Base(name), strings.Join(args, " "), err, strings.TrimSpace(string(msg)))
	}
	return nil
}

// cleanEnv is the environment without PG* variables, which would point
// the tools at another server.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PG") {
			env = append(env, kv)
		}
	}
	return env
}

// DSN is the URL of database db over TCP with the superuser's password,
// as meshd's --store takes it.
func (s *Server) DSN(db string) string {
	u := url.URL{Scheme: "postgres", User: url.UserPassword(User, s.password),
		Host: net.JoinHostPort(s.host, strconv.Itoa(s.port)), Path: "/" + db, RawQuery: "sslmode=disable"}
	return u.String()
}

// Addr is the server's host:port.
func (s *Server) Addr() string { return net.JoinHostPort(s.host, strconv.Itoa(s.port)) }

// Password is the superuser's password.
func (s *Server) Password() string { return s.password }

// socketDSN reaches db over the unix socket (trust auth): it works from
// any network namespace.
func (s *Server) socketDSN(db string) string {
	return fmt.Sprintf("host=%s port=%d user=%s dbname=%s sslmode=disable", s.dir, s.port, User, db)
}

// NewDatabase creates a database with a unique name and returns its DSN;
// tb's cleanup drops it (connections still open are cut).
func (s *Server) NewDatabase(tb testing.TB) string {
	tb.Helper()
	name := fmt.Sprintf("t%d_%s", s.dbSeq.Add(1), randHex(4))
	if err := s.exec("CREATE DATABASE " + name); err != nil {
		tb.Fatalf("pgtest: create database: %v", err)
	}
	tb.Cleanup(func() {
		s.mu.Lock()
		running := s.running
		s.mu.Unlock()
		if !running {
			return // the server's own cleanup removes everything
		}
		if err := s.exec("DROP DATABASE IF EXISTS " + name + " WITH (FORCE)"); err != nil {
			tb.Errorf("pgtest: drop database %s: %v", name, err)
		}
	})
	return s.DSN(name)
}

// exec runs one statement as superuser in database postgres.
func (s *Server) exec(sql string) error {
	ctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
	defer cancel()
	conn, err := pgx.Connect(ctx, s.socketDSN("postgres"))
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, sql)
	return err
}

// Terminate cuts every connection to db (a name, or a DSN from
// NewDatabase), as a network fault or a database restart would.
func (s *Server) Terminate(db string) error {
	if u, err := url.Parse(db); err == nil && u.Scheme != "" {
		db = strings.TrimPrefix(u.Path, "/")
	}
	return s.exec(fmt.Sprintf("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '%s' AND pid <> pg_backend_pid()",
		strings.ReplaceAll(db, "'", "''")))
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func appendFile(path, text string) error {
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(text); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
