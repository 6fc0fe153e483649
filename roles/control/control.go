// Package control wires the control role: flags to configuration, start,
// stop. `meshd control` serves internal/control alone; roles/all runs the
// same service next to signal and relay on one listener through Start.
package control

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/urfave/cli/v2"
	"go.uber.org/zap"

	adminv1 "meshd/api/admin/v1"
	"meshd/internal/cliutil"
	"meshd/internal/cluster"
	"meshd/internal/control"
	"meshd/internal/server"
	"meshd/internal/tlsconf"
	"meshd/store"
)

// DefaultListen is where `meshd control` listens alone.
const DefaultListen = ":33073"

// DBFile is the database's name in the data directory.
const DBFile = "meshd.db"

// Config is the control service's configuration (the listener's belongs to
// whoever owns the server).
type Config struct {
	// DataDir holds the bootstrap files, and the SQLite database unless
	// Store names another.
	DataDir string
	// Store is the database: a PostgreSQL URL shared by replicas, or a
	// SQLite file; "": DBFile in DataDir.
	Store string
	// PublicURL is how agents reach control; it goes into join tokens.
	PublicURL string
	// TLSPin of control's self-signed certificate, for join tokens.
	TLSPin string
	// TLS, when its self-signed certificate waits for the store
	// (tlsconf.Options.SharedSelfSigned), gets it from there in Start,
	// which sets TLSPin, and SignalPin when signal is served here too.
	TLS *tlsconf.Server
	// SignalURL and SignalPin go into every map.
	SignalURL string
	SignalPin string
	// RelayURLs are the STUN/TURN servers in every map.
	RelayURLs []string
	// TURNSecret is the relays' shared secret; nil: the one control keeps
	// in its database (Control.Service.TURNSecret()).
	TURNSecret []byte
	// TURNTTL is how long TURN credentials live (0: control's default).
	TURNTTL time.Duration
	// Status adds the counters of roles running in the same process to the
	// admin API's server status (roles/all sets it).
	Status func(*adminv1.ServerStatus)
	// Cluster is what this replica shares with the others of the network;
	// nil: Start opens one for Store (PostgreSQL: the replicas sharing it;
	// SQLite: this replica alone).
	Cluster cluster.Cluster
	// OIDC turns on single sign-on (sso.go).
	OIDC control.OIDCOptions
}

// Flags are the control service's own flags (without the server's and
// logging's); roles/all may reuse the ones it needs.
func Flags() []cli.Flag {
	return append([]cli.Flag{
		&cli.StringFlag{Name: "store", Usage: "database `URL`: postgres://user:pass@host:5432/db?sslmode=verify-full, shared by the replicas of one network (default: SQLite in --data; MESHD_STORE or PGPASSWORD keep the password out of ps)"},
		&cli.StringFlag{Name: "public-url", Usage: "`URL` agents reach control at, e.g. https://vpn.example.org:33073 (goes into join tokens)"},
		&cli.StringFlag{Name: "signal-url", Usage: "`URL` of the signal service put into network maps, e.g. https://vpn.example.org:10000"},
		&cli.StringFlag{Name: "signal-pin", Usage: "TLS `PIN` (sha256:HEX) of signal's self-signed certificate, put into network maps"},
		&cli.StringSliceFlag{Name: "relay-url", Usage: "STUN/TURN `URL` put into network maps (repeatable): stun:host:3478, turn:host:3478?transport=udp, turns:host:5349?transport=tcp"},
		&cli.StringFlag{Name: "turn-secret", Usage: "TURN REST `SECRET` shared with the relays (prefer --turn-secret-file)"},
		&cli.StringFlag{Name: "turn-secret-file", Usage: "`FILE` holding the TURN REST secret shared with the relays"},
		&cli.DurationFlag{Name: "turn-ttl", Value: control.DefaultTURNTTL, Usage: "lifetime of the TURN credentials in maps (refreshed before they expire)"},
	}, ssoFlags()...)
}

// ConfigFromFlags reads Flags (and --data).
func ConfigFromFlags(c *cli.Context) (Config, error) {
	cfg := Config{
		DataDir:   c.String("data"),
		Store:     c.String("store"),
		PublicURL: strings.TrimRight(c.String("public-url"), "/"),
		SignalURL: c.String("signal-url"),
		SignalPin: c.String("signal-pin"),
		RelayURLs: c.StringSlice("relay-url"),
		TURNTTL:   c.Duration("turn-ttl"),
	}
	if cfg.PublicURL == "" {
		return cfg, errors.New("--public-url is required: the URL agents reach control at, e.g. https://vpn.example.org:33073")
	}
	if u, err := url.Parse(cfg.PublicURL); err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
		return cfg, fmt.Errorf("--public-url %q: want https://host:port", cfg.PublicURL)
	}
	if cfg.SignalPin != "" {
		pin, err := tlsconf.ParsePin(cfg.SignalPin)
		if err != nil {
			return cfg, fmt.Errorf("--signal-pin: %w", err)
		}
		cfg.SignalPin = pin
	}
	switch s, f := c.String("turn-secret"), c.String("turn-secret-file"); {
	case s != "" && f != "":
		return cfg, errors.New("--turn-secret and --turn-secret-file: give one of them")
	case s != "":
		cfg.TURNSecret = []byte(s)
	case f != "":
		b, err := os.ReadFile(f)
		if err != nil {
			return cfg, fmt.Errorf("--turn-secret-file: %w", err)
		}
		if cfg.TURNSecret = []byte(strings.TrimSpace(string(b))); len(cfg.TURNSecret) == 0 {
			return cfg, fmt.Errorf("--turn-secret-file %s is empty", f)
		}
	}
	var err error
	if cfg.OIDC, err = oidcFromFlags(c); err != nil {
		return cfg, err
	}
	if cfg.TURNTTL < time.Minute && cfg.TURNTTL != 0 {
		return cfg, fmt.Errorf("--turn-ttl %s: want at least 1m", cfg.TURNTTL)
	}
	return cfg, nil
}

// Control is a running control service with its store.
type Control struct {
	Service *control.Service
	Store   *store.Store
	// Cluster is what this replica shares with the others: cfg.Cluster, or
	// the one Start opened for cfg.Store (PostgreSQL: shared; else Local).
	// roles/all gives it to its signal.
	Cluster    cluster.Cluster
	ownCluster bool
	// Boot holds the admin token and the join line.
	Boot control.Bootstrap
	// TLSPin is the pin join tokens carry ("" without a self-signed
	// certificate).
	TLSPin string
}

// Start opens the database (cfg.Store, or the one in cfg.DataDir), starts the control service,
// bootstraps the account (first start) and mounts control's services on
// srv. Close it after srv.Serve returned.
func Start(ctx context.Context, cfg Config, srv *server.Server, log *zap.Logger) (*Control, error) {
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("control: data dir: %w", err)
	}
	target := cfg.Store
	if target == "" {
		target = filepath.Join(cfg.DataDir, DBFile)
	}
	log.Info("opening the store", zap.String("store", store.Redact(target)))
	st, err := store.Open(ctx, target)
	if err != nil {
		return nil, fmt.Errorf("control: %w", err)
	}
	if cfg.TLS != nil && cfg.TLS.NeedsSelfSigned() {
		pin, err := shareTLS(ctx, st, cfg.TLS, cfg.DataDir, log)
		if err != nil {
			st.Close()
			return nil, err
		}
		if cfg.SignalURL == cfg.PublicURL && cfg.SignalPin == "" {
			cfg.SignalPin = pin // signal on this listener, with this certificate
		}
		cfg.TLSPin = pin
	}
	clu := cfg.Cluster
	if clu == nil {
		if clu, err = openCluster(ctx, target, log); err != nil {
			st.Close()
			return nil, err
		}
	}
	svc, err := control.New(ctx, control.Options{
		Store:     st,
		Log:       log.Named("control"),
		PublicURL: cfg.PublicURL,
		TLSPin:    cfg.TLSPin,
		SignalURL: cfg.SignalURL,
		SignalPin: cfg.SignalPin,
		Relays:    control.RelayOptions{URLs: cfg.RelayURLs, Secret: cfg.TURNSecret, TTL: cfg.TURNTTL},
		Status:    cfg.Status,
		Cluster:   clu,
		OIDC:      cfg.OIDC,
	})
	if err != nil {
		clu.Close()
		st.Close()
		return nil, err
	}
	boot, err := svc.Bootstrap(ctx, cfg.DataDir)
	if err != nil {
		svc.Close()
		clu.Close()
		st.Close()
		return nil, err
	}
	svc.Mount(srv)
	return &Control{Service: svc, Store: st, Cluster: clu, ownCluster: cfg.Cluster == nil, Boot: boot, TLSPin: cfg.TLSPin}, nil
}

// Close stops the service and closes the database (and the cluster, when
// Start opened it). Close what uses Cluster (signal) first.
func (c *Control) Close() error {
	err := c.Service.Close()
	if c.ownCluster {
		err = errors.Join(err, c.Cluster.Close())
	}
	return errors.Join(err, c.Store.Close())
}

// PrintJoin prints the copy-paste line that joins a machine, and how to
// administer the network.
func PrintJoin(w io.Writer, boot control.Bootstrap, dataDir string) {
	if boot.Created {
		fmt.Fprintf(w, "meshd: created a new network (admin token in %s)\n", boot.AdminTokenPath)
	}
	if boot.JoinCommand == "" {
		fmt.Fprintf(w, "\n%s\n\nTo manage the network here: meshd admin --data %s peers list\n\n", boot.Hint, dataDir)
		return
	}
	fmt.Fprintf(w, "\nTo join a machine, run on it:\n\n  %s\n\nTo manage the network here: meshd admin --data %s peers list\n\n", boot.JoinCommand, dataDir)
}

// Command is `meshd control`.
func Command() *cli.Command {
	return &cli.Command{
		Name:  "control",
		Usage: "run the control role: peers, policies and network maps",
		Description: "Control registers peers (setup keys), keeps the account's groups, policies, routes and DNS,\n" +
			"and streams each peer its network map. The first start creates the network and prints the\n" +
			"line that joins a machine. `meshd all` includes it.",
		Flags: append(append(cliutil.ServerFlags(DefaultListen), append(Flags(), cliutil.MetricsFlag("127.0.0.1:9181"), DashboardFlag())...),
			cliutil.LogFlags()...),
		Action: run,
	}
}

func run(c *cli.Context) error {
	log, err := cliutil.Logger(c)
	if err != nil {
		return cliutil.Exit(2, "%v", err)
	}
	defer func() { _ = log.Sync() }()
	cfg, err := ConfigFromFlags(c)
	if err != nil {
		return cliutil.Exit(2, "%v", err)
	}
	for _, u := range cfg.RelayURLs {
		if (strings.HasPrefix(u, "turn:") || strings.HasPrefix(u, "turns:")) && cfg.TURNSecret == nil {
			return cliutil.Exit(2, "--relay-url %s needs the relay's secret: --turn-secret-file FILE", u)
		}
	}
	insecure := c.Bool("insecure")
	if scheme, _, _ := strings.Cut(cfg.PublicURL, ":"); insecure != (scheme == "http") {
		return cliutil.Exit(2, "--public-url %s: use https:// (or http:// only together with --insecure)", cfg.PublicURL)
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return cliutil.Exit(1, "control: data dir %s: %v", cfg.DataDir, err)
	}
	if cfg.SignalURL == "" {
		log.Warn("no --signal-url: maps carry no signal address, so agents cannot set up connections; run `meshd all` or pass --signal-url")
	}
	var tlsConfig *tls.Config
	if insecure {
		log.Warn("serving without TLS (--insecure): for labs only")
	} else {
		u, _ := url.Parse(cfg.PublicURL)
		host, _, _ := net.SplitHostPort(c.String("listen"))
		opts := cliutil.TLSOptions(c, u.Hostname(), host)
		opts.SharedSelfSigned = true // from the store, in Start
		ts, err := tlsconf.ServerConfig(opts)
		if err != nil {
			return cliutil.Exit(1, "control: %v", err)
		}
		tlsConfig, cfg.TLSPin, cfg.TLS = ts.Config, ts.Pin, ts
	}
	ctx, stop := cliutil.SignalContext(c.Context)
	defer stop()
	srv := server.New(log, tlsConfig)
	srv.ConnLimits = srv.ConnLimits.WithTotal(c.Int("max-conns"))
	// The port first: a server that cannot run creates no network.
	ln, err := srv.Listen(c.String("listen"))
	if err != nil {
		return cliutil.Exit(1, "control: %v (is another process on that port? pick one with --listen)", err)
	}
	ctl, err := Start(ctx, cfg, srv, log)
	if err != nil {
		ln.Close()
		return cliutil.Exit(1, "%v", err)
	}
	metricsDone, err := cliutil.ServeMetrics(ctx, log, c.String("metrics-listen"), ctl.Service)
	if err != nil {
		ln.Close()
		ctl.Close()
		return cliutil.Exit(1, "control: %v", err)
	}
	dashDone, err := StartDashboard(ctx, c, ctl.Service, tlsConfig, cfg.PublicURL, log, c.App.Writer)
	if err != nil {
		stop()
		ln.Close()
		<-metricsDone
		ctl.Close()
		return cliutil.Exit(1, "control: %v", err)
	}
	PrintJoin(c.App.Writer, ctl.Boot, cfg.DataDir)
	fmt.Fprintf(c.App.Writer, "signal ticket key (for meshd signal --control-key): %s\n", ctl.Service.TicketKeyString())
	err = srv.Serve(ctx, ln)
	stop()
	if derr := <-dashDone; err == nil && derr != nil {
		err = derr
	}
	if merr := <-metricsDone; err == nil && merr != nil {
		err = merr
	}
	if cerr := ctl.Close(); err == nil && cerr != nil {
		err = cerr
	}
	if err != nil {
		return cliutil.Exit(1, "control: %v", err)
	}
	return nil
}
