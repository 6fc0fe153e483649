// Package controltest runs control in-process for tests: the real service
// on an httptest TLS server (HTTP/2, real Connect), a fake clock, an admin
// client, and fake agents with real keys that join and sync through
// controlclient. Tests of control, of the agent and of `meshd admin` use it.
package controltest

import (
	"context"
	"crypto/tls"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"

	"meshd/api/admin/v1/adminv1connect"
	"meshd/internal/cluster"
	"meshd/internal/control"
	"meshd/store"
)

// Clock is a settable clock for the service.
type Clock struct {
	mu sync.Mutex
	t  time.Time
}

// NewClock returns a clock at t.
func NewClock(t time.Time) *Clock { return &Clock{t: t} }

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// Advance moves the clock forward.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// Option changes how a Harness is made.
type Option func(*config)

type config struct {
	patience time.Duration
	opts     func(*control.Options)
	quiet    bool
	dir      string
	hostFmt  func(i int) string
	cluster  cluster.Cluster
	wrap     func(cluster.Cluster) cluster.Cluster
	clock    *Clock
	boot     *control.Bootstrap // of another replica: no bootstrap here
	store    string             // the database ("": meshd.db in dir)
}

// WithOptions lets a test change the service's options (relays, timings...).
// It is applied again on every Restart.
func WithOptions(fn func(*control.Options)) Option { return func(c *config) { c.opts = fn } }

// WithDir keeps the data directory (database, token files) in dir.
func WithDir(dir string) Option { return func(c *config) { c.dir = dir } }

// Patience bounds the harness's waits (default WaitTimeout); benchmarks
// with many agents on a busy machine need more.
func Patience(d time.Duration) Option { return func(c *config) { c.patience = d } }

// Quiet logs at warn level and above only (benchmarks with many agents).
func Quiet() Option { return func(c *config) { c.quiet = true } }

// Hostnames names the agents NewHarness adds (default "agent-<i>").
func Hostnames(fn func(i int) string) Option { return func(c *config) { c.hostFmt = fn } }

// Harness is control plus N agents, in-process.
type Harness struct {
	tb    testing.TB
	cfg   config
	Dir   string
	Clock *Clock
	// URL of control, stable across restarts.
	URL    string
	Server *httptest.Server
	Store  *store.Store
	// Faults stands between the service and Store: a test loses the
	// database with it.
	Faults  *FaultyStore
	Service *control.Service
	// Boot is the bootstrap result: admin token and reusable setup key.
	Boot   control.Bootstrap
	Admin  adminv1connect.AdminServiceClient
	Agents []*Agent

	handler atomic.Pointer[http.ServeMux]
	// storeTarget is the database control opens ("": meshd.db in Dir).
	storeTarget string
}

// NewHarness starts control and joins n agents with the bootstrap setup key,
// waiting until each has its first map. Everything stops at test cleanup.
func NewHarness(tb testing.TB, n int, opts ...Option) *Harness {
	tb.Helper()
	h := &Harness{tb: tb, Clock: NewClock(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC))}
	h.cfg.hostFmt = func(i int) string { return "agent-" + itoa(i) }
	h.cfg.patience = WaitTimeout
	for _, o := range opts {
		o(&h.cfg)
	}
	if h.cfg.clock != nil {
		h.Clock = h.cfg.clock
	}
	h.Dir = h.cfg.dir
	h.storeTarget = h.cfg.store
	if h.Dir == "" {
		h.Dir = tb.TempDir()
	}
	h.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if mux := h.handler.Load(); mux != nil {
			mux.ServeHTTP(w, r)
			return
		}
		http.Error(w, "control is restarting", http.StatusServiceUnavailable)
	}))
	h.Server.EnableHTTP2 = true
	h.Server.StartTLS()
	tb.Cleanup(h.Server.Close)
	h.URL = h.Server.URL
	h.start()
	tb.Cleanup(h.stop)
	h.Admin = h.AdminClient(h.Boot.AdminToken)
	for i := range n {
		h.Agents = append(h.Agents, h.AddAgent(AgentOptions{Hostname: h.cfg.hostFmt(i)}))
	}
	for _, a := range h.Agents {
		a.WaitFor(tb, "first map", func(*Map) bool { return true })
	}
	return h
}

func itoa(i int) string {
	const digits = "0123456789"
	if i < 10 {
		return digits[i : i+1]
	}
	return itoa(i/10) + digits[i%10:i%10+1]
}

func (h *Harness) start() {
	h.tb.Helper()
	ctx := context.Background()
	target := h.storeTarget
	if target == "" {
		target = filepath.Join(h.Dir, "meshd.db")
	}
	st, err := store.Open(ctx, target)
	if err != nil {
		h.tb.Fatalf("controltest: open store: %v", err)
	}
	log := zaptest.NewLogger(h.tb)
	if h.cfg.quiet {
		log = zaptest.NewLogger(h.tb, zaptest.Level(zapcore.WarnLevel))
	}
	faults := &FaultyStore{Store: st}
	cl := h.cfg.cluster
	if h.cfg.wrap != nil && cl != nil {
		cl = h.cfg.wrap(cl)
	}
	opts := control.Options{Store: faults, Cluster: cl, Log: log.Named("control"), PublicURL: h.URL, Now: h.Clock.Now,
		SignalURL: "https://signal.test:443", Coalesce: 5 * time.Millisecond, JanitorInterval: 10 * time.Millisecond,
		ReplicaHeartbeat: 20 * time.Millisecond}
	if h.cfg.opts != nil {
		h.cfg.opts(&opts)
	}
	svc, err := control.New(ctx, opts)
	if err != nil {
		st.Close()
		h.tb.Fatalf("controltest: start control: %v", err)
	}
	var boot control.Bootstrap
	if h.cfg.boot != nil {
		boot = *h.cfg.boot
	} else if boot, err = svc.Bootstrap(ctx, h.Dir); err != nil {
		svc.Close()
		st.Close()
		h.tb.Fatalf("controltest: bootstrap: %v", err)
	}
	mux := http.NewServeMux()
	svc.Mount(mux)
	h.Store, h.Faults, h.Service, h.Boot = st, faults, svc, boot
	h.handler.Store(mux)
}

func (h *Harness) stop() {
	h.handler.Store(nil)
	if h.Service != nil {
		h.Service.Close()
		h.Store.Close()
		h.Service, h.Store = nil, nil
	}
}

// Restart stops control and starts it again on the same database and URL;
// agents reconnect by themselves.
func (h *Harness) Restart() {
	h.tb.Helper()
	h.stop()
	h.start()
}

// HTTPClient returns a client trusting the test server (HTTP/2).
func (h *Harness) HTTPClient() *http.Client { return h.Server.Client() }

// StallingHTTPClient returns a client on its own connection whose streams
// buffer little, so that a stream whose reader stops soon stalls control's
// sends (HTTP/2 flow control).
func (h *Harness) StallingHTTPClient() *http.Client {
	base := h.Server.Client().Transport.(*http.Transport)
	p := new(http.Protocols)
	p.SetHTTP2(true)
	t := &http.Transport{TLSClientConfig: base.TLSClientConfig.Clone(), Protocols: p,
		HTTP2: &http.HTTP2Config{MaxReceiveBufferPerStream: 1 << 10, MaxReceiveBufferPerConnection: 64 << 10}}
	h.tb.Cleanup(t.CloseIdleConnections)
	return &http.Client{Transport: t}
}

// AdminClient returns an admin API client using token.
func (h *Harness) AdminClient(token string) adminv1connect.AdminServiceClient {
	return adminv1connect.NewAdminServiceClient(h.HTTPClient(), h.URL,
		connect.WithInterceptors(BearerToken(token)))
}

// BearerToken is a client interceptor that authenticates admin calls.
func BearerToken(token string) connect.UnaryInterceptorFunc {
	return func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			req.Header().Set("Authorization", "Bearer "+token)
			return next(ctx, req)
		}
	}
}

// TLSConfig of the test server's clients (for tests building their own).
func (h *Harness) TLSConfig() *tls.Config {
	return h.Server.Client().Transport.(*http.Transport).TLSClientConfig
}
