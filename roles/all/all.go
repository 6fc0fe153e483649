// Package all wires `meshd all`: control, signal and relay in one process
// for a single VPS. Control and signal share one HTTPS listener; TURN over
// TLS shares it too, told apart by ALPN (relay.SplitTLS); STUN and TURN over
// UDP and TCP listen on --stun-listen. It is the only package that imports
// every server role.
package all

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/urfave/cli/v2"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"

	adminv1 "meshd/api/admin/v1"
	"meshd/internal/cliutil"
	"meshd/internal/server"
	natsignal "meshd/internal/signal"
	"meshd/internal/tlsconf"
	natrelay "meshd/nat/relay"
	"meshd/roles/control"
	"meshd/roles/relay"
	"meshd/roles/signal"
)

// DefaultListen is the HTTPS port of control, signal and TURN over TLS.
const DefaultListen = ":33073"

// Command is `meshd all`.
func Command() *cli.Command {
	return &cli.Command{
		Name:  "all",
		Usage: "run control, signal and relay in one process (one VPS)",
		Description: "The simplest server: everything a mesh needs on one machine. The first start creates the\n" +
			"network in --data and prints the line that joins a machine; later starts reuse it.\n" +
			"Ports: --listen (TCP, HTTPS for control and signal, and TURN over TLS) and --stun-listen\n" +
			"(UDP and TCP, STUN and TURN) plus the relay's UDP port range (--relay-ports).",
		Flags:  flags(),
		Action: run,
	}
}

// flags are the server flags, control's (less what `all` derives itself),
// signal's and the relay's.
func flags() []cli.Flag {
	derived := []string{"signal-url", "signal-pin", "turn-secret", "turn-secret-file"}
	fs := cliutil.ServerFlags(DefaultListen)
	for _, f := range control.Flags() {
		if !slices.Contains(derived, f.Names()[0]) {
			fs = append(fs, f)
		}
	}
	fs = append(fs, signal.Flags()...)
	fs = append(fs, relay.Flags()...)
	fs = append(fs, cliutil.MetricsFlag("127.0.0.1:9181"), control.DashboardFlag())
	return append(fs, cliutil.LogFlags()...)
}

// plan is what run derives from the flags before it starts anything.
type plan struct {
	publicURL *url.URL
	explicit  bool // --public-url was given
	relayIP   netip.Addr
	// relayIPErr: the public URL's host gave no relay address (the relay
	// then takes the default route's, unless --relay-ip).
	relayIPErr error
	tls        *tlsconf.Server // nil with --insecure
}

func run(c *cli.Context) error {
	log, err := cliutil.Logger(c)
	if err != nil {
		return cliutil.Exit(2, "%v", err)
	}
	defer func() { _ = log.Sync() }()
	// Ports first: nothing is written to --data unless this server can run.
	bound, err := bindPorts(c.String("listen"), c.String("stun-listen"), !c.Bool("no-turn-tcp"))
	if err != nil {
		return cliutil.Exit(1, "all: %v", err)
	}
	served := false
	defer func() {
		bound.releaseSTUN()
		if !served {
			bound.https.Close()
		}
	}()
	dataDir := c.String("data")
	if err := checkDataDir(dataDir); err != nil {
		return cliutil.Exit(1, "all: %v", err)
	}
	p, err := makePlan(c)
	if err != nil {
		return cliutil.Exit(2, "all: %v", err)
	}
	ctlCfg, err := control.ConfigFromFlags(withPublicURL(c, p.publicURL.String()))
	if err != nil {
		return cliutil.Exit(2, "all: %v", err)
	}
	sigCfg, err := signal.ConfigFromFlags(c)
	if err != nil {
		return cliutil.Exit(2, "all: %v", err)
	}
	relCfg, err := relay.ConfigFromFlags(c)
	if err != nil {
		return cliutil.Exit(2, "all: %v", err)
	}
	relayIPGiven := relCfg.PublicIP.IsValid()
	if !relayIPGiven {
		relCfg.PublicIP = p.relayIP
		if p.relayIPErr != nil {
			log.Warn("the relay announces the default route's address; peers outside this network may not reach it", zap.Error(p.relayIPErr))
		}
	}

	// Signal shares control's listener, so maps point agents back here.
	ctlCfg.SignalURL = ctlCfg.PublicURL
	var tlsConfig *tls.Config
	if p.tls != nil {
		// A self-signed certificate comes from the store in Start, which
		// sets both pins then.
		tlsConfig, ctlCfg.TLSPin, ctlCfg.SignalPin, ctlCfg.TLS = p.tls.Config, p.tls.Pin, p.tls.Pin, p.tls
	}
	ours := relayURLs(p.publicURL, relCfg.Listen, p.tls != nil)
	extraURLs := ctlCfg.RelayURLs
	ctlCfg.RelayURLs = append(ours, extraURLs...)

	// The admin API's server status includes signal's and the relay's
	// counters; both exist before the server serves its first request.
	var (
		sig *natsignal.Server
		rel *natrelay.Server
	)
	ctlCfg.Status = func(st *adminv1.ServerStatus) { fillStatus(st, sig, rel, ctlCfg.RelayURLs) }

	ctx, stop := cliutil.SignalContext(c.Context)
	defer stop()
	srv := server.New(log, tlsConfig)
	srv.ConnLimits = srv.ConnLimits.WithTotal(c.Int("max-conns"))
	// Control opens the replicas' cluster for its store (PostgreSQL: the
	// other replicas; SQLite: this process alone); signal shares it, and
	// control's replica heartbeats cover signal's presence too, so signal
	// runs none (sigCfg.Heartbeat 0).
	ctl, err := control.Start(ctx, ctlCfg, srv, log)
	if err != nil {
		return cliutil.Exit(1, "all: %v", err)
	}
	defer ctl.Close()
	sigCfg.ControlKey = ctl.Service.TicketKey()
	sigCfg.Cluster = ctl.Cluster
	if sig, err = signal.Start(ctx, sigCfg, srv, log); err != nil {
		return cliutil.Exit(1, "all: %v", err)
	}
	defer sig.Close() // before control's Close: its streams' presence goes first

	raw := bound.https
	served = true // raw is closed through httpLn from here on
	// Every connection to the port, HTTP and TURN alike, counts against
	// one set of limits, so that silent connections cannot lock the port.
	lim := srv.LimitConns(raw)
	var httpLn net.Listener = lim
	if p.tls != nil {
		var turnLn net.Listener
		httpLn, turnLn = natrelay.SplitTLS(server.RefusePlainHTTP(lim), srv.TLSConfig())
		relCfg.TLSListener = lim.Established(turnLn)
	}
	relCfg.Secret = ctl.Service.TURNSecret()
	// A deleted or expired peer loses the relay at once, not when its
	// credential expires.
	relCfg.UserValid = ctl.Service.TURNUserValid
	bound.releaseSTUN()
	if rel, err = relay.Start(ctx, relCfg, log); err != nil {
		httpLn.Close()
		if relCfg.TLSListener != nil {
			relCfg.TLSListener.Close()
		}
		return cliutil.Exit(1, "all: %v (is another process on the port? pick one with --stun-listen)", err)
	}
	// Metrics of the three roles, on their own address: not on the public
	// HTTPS port.
	metricsDone, err := cliutil.ServeMetrics(ctx, log, c.String("metrics-listen"), ctl.Service, sig, rel)
	if err != nil {
		httpLn.Close()
		rel.Close()
		return cliutil.Exit(1, "all: %v", err)
	}

	dashDone, err := control.StartDashboard(ctx, c, ctl.Service, tlsConfig, ctlCfg.PublicURL, log, c.App.Writer)
	if err != nil {
		stop()
		httpLn.Close()
		rel.Close()
		<-metricsDone
		return cliutil.Exit(1, "all: %v", err)
	}
	control.PrintJoin(c.App.Writer, ctl.Boot, dataDir)
	log.Info("meshd all is up",
		zap.String("public_url", ctlCfg.PublicURL),
		zap.String("tls_pin", ctl.TLSPin),
		zap.Strings("relays", ctlCfg.RelayURLs))

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return srv.Serve(gctx, httpLn) })
	g.Go(func() error {
		checkPublicURL(gctx, log, p, relCfg.PublicIP, relayIPGiven, extraURLs, ours)
		return nil
	})
	g.Go(func() error {
		<-gctx.Done()
		return rel.Close()
	})
	err = g.Wait()
	stop()
	if derr := <-dashDone; err == nil && derr != nil {
		err = derr
	}
	if merr := <-metricsDone; err == nil && merr != nil {
		err = merr
	}
	if err != nil && !errors.Is(err, net.ErrClosed) {
		return cliutil.Exit(1, "all: %v", err)
	}
	return nil
}

// makePlan derives the public URL, the relay address and TLS from the flags.
func makePlan(c *cli.Context) (plan, error) {
	var p plan
	insecure := c.Bool("insecure")
	listen := c.String("listen")
	_, port, err := net.SplitHostPort(listen)
	if err != nil {
		return p, fmt.Errorf("--listen %q: want HOST:PORT (e.g. :33073)", listen)
	}
	raw := strings.TrimRight(c.String("public-url"), "/")
	p.explicit = raw != ""
	if raw == "" {
		// No URL given: the address of the default route's interface, which
		// is right on a VPS with its public address on an interface.
		ip, err := relay.DefaultPublicIP()
		if err != nil {
			return p, fmt.Errorf("cannot guess the public address (%v): give --public-url https://HOST:%s", err, port)
		}
		scheme := "https"
		if insecure {
			scheme = "http"
		}
		raw = scheme + "://" + net.JoinHostPort(ip.String(), port)
	}
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return p, fmt.Errorf("--public-url %q: want https://HOST:PORT", raw)
	}
	if insecure != (u.Scheme == "http") {
		return p, fmt.Errorf("--public-url %s: use https:// (or http:// only together with --insecure)", raw)
	}
	p.publicURL = u
	p.relayIP, p.relayIPErr = relayIPForHost(c.Context, u.Hostname(), net.DefaultResolver.LookupNetIP)
	if !insecure {
		listenHost, _, _ := net.SplitHostPort(listen)
		opts := cliutil.TLSOptions(c, u.Hostname(), listenHost)
		opts.SharedSelfSigned = true // from the store, in control.Start
		ts, err := tlsconf.ServerConfig(opts)
		if err != nil {
			return p, err
		}
		p.tls = ts
	}
	return p, nil
}

// relayURLs are the STUN/TURN servers of `meshd all` as agents reach them:
// on the public URL's host, STUN and TURN over UDP and TCP on the
// --stun-listen port, TURN over TLS on the HTTPS port.
func relayURLs(public *url.URL, stunListen string, withTLS bool) []string {
	host := public.Hostname()
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	_, stunPort, _ := net.SplitHostPort(stunListen)
	if _, err := strconv.Atoi(stunPort); err != nil || stunPort == "" {
		stunPort = "3478"
	}
	hp := host + ":" + stunPort
	urls := []string{"stun:" + hp, "turn:" + hp + "?transport=udp", "turn:" + hp + "?transport=tcp"}
	if withTLS {
		httpsPort := public.Port()
		if httpsPort == "" {
			httpsPort = "443"
		}
		urls = append(urls, "turns:"+host+":"+httpsPort+"?transport=tcp")
	}
	return urls
}

// withPublicURL makes --public-url visible to control's flag parsing when
// `all` derived it.
func withPublicURL(c *cli.Context, u string) *cli.Context {
	if c.String("public-url") == "" {
		_ = c.Set("public-url", u)
	}
	return c
}

// checkDataDir creates the data directory and checks that it is a
// writable directory, so a wrong --data fails at once with a clear error.
func checkDataDir(dir string) error {
	if dir == "" {
		return errors.New("--data is empty: give the directory for the database and certificate")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("data dir %s: %w (choose another with --data)", dir, err)
	}
	f, err := os.CreateTemp(dir, ".write-test-*")
	if err != nil {
		return fmt.Errorf("data dir %s is not writable: %w (fix its permissions or choose another with --data)", dir, err)
	}
	name := f.Name()
	f.Close()
	return os.Remove(filepath.Clean(name))
}

// fillStatus adds signal's and the relay's counters to the server status.
func fillStatus(st *adminv1.ServerStatus, sig *natsignal.Server, rel *natrelay.Server, relayURLs []string) {
	if sig != nil {
		s := sig.Stats()
		st.Signal = &adminv1.SignalStatus{Streams: int64(s.Streams), Registered: s.Registered,
			Forwarded: s.Sent, NotConnected: s.NotConnected, Refused: s.Refused}
	}
	if rel != nil {
		r := rel.Stats()
		var refused uint64
		for _, n := range r.Refused {
			refused += n
		}
		for _, n := range r.AuthRefused {
			refused += n
		}
		st.Relay = &adminv1.RelayStatus{Allocations: int64(r.Allocations), AllocationsTotal: r.AllocationsTotal,
			BytesToPeers: r.BytesToPeers, BytesFromPeers: r.BytesFromPeers, Refused: refused, Urls: relayURLs}
	}
}
