// Package signal wires the signal role: flags to configuration, start, stop.
// `meshd signal` serves internal/signal alone; roles/all mounts the same
// service next to control on one listener through Start.
package signal

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/urfave/cli/v2"
	"go.uber.org/zap"

	"meshd/internal/cliutil"
	"meshd/internal/cluster"
	"meshd/internal/server"
	"meshd/internal/signal"
	"meshd/internal/tlsconf"
	"meshd/internal/version"
)

// DefaultListen is where `meshd signal` listens alone.
const DefaultListen = ":10000"

// Config is the signal service's configuration (the listener's belongs to
// whoever owns the server).
type Config struct {
	MaxMessageBytes   int
	RatePerSecond     float64
	Burst             int
	QueueLen          int
	HeartbeatInterval time.Duration
	// ControlKey is control's ticket key (control.Service.TicketKey):
	// only keys with a ticket it signed may register. `meshd signal` takes
	// it as --control-key, roles/all from its control in-process.
	ControlKey ed25519.PublicKey

	// Cluster joins this signal to the network's other signal instances:
	// peers registered at any of them reach each other. Nil: this
	// instance alone. Whoever made it closes it, after ctx ends.
	Cluster cluster.Cluster
	// Heartbeat, with Cluster, makes signal record this replica as alive
	// every interval (a standalone `meshd signal`). Zero: someone else
	// does (`meshd all`: control's heartbeats cover the process).
	Heartbeat time.Duration
	// Replica describes this process in those heartbeats (SignalURL,
	// Version; the ID is the cluster's).
	Replica cluster.Replica
}

// controlKeyFlag is `meshd signal`'s alone: roles/all has its control's.
var controlKeyFlag = &cli.StringFlag{Name: "control-key", EnvVars: []string{"MESHD_CONTROL_KEY"},
	Usage: "control's signal ticket `KEY` (base64), as `meshd control` prints it: only peers with a ticket signed by it may register (required)"}

// Flags are the signal service's own flags; roles/all includes them too.
func Flags() []cli.Flag {
	return []cli.Flag{
		&cli.IntFlag{Name: "signal-max-message-bytes", Value: signal.DefaultMaxMessageBytes, Usage: "largest sealed message signal forwards, in `BYTES`"},
		&cli.Float64Flag{Name: "signal-rate", Value: signal.DefaultRatePerSecond, Usage: "each peer may send `RATE` messages a second on average (a token bucket)"},
		&cli.IntFlag{Name: "signal-burst", Value: signal.DefaultBurst, Usage: "each peer may send `N` messages at once before --signal-rate applies"},
		&cli.IntFlag{Name: "signal-queue", Value: signal.DefaultQueueLen, Usage: "`N` messages may wait for one peer; beyond that, senders are told its queue is full"},
		&cli.DurationFlag{Name: "signal-heartbeat", Value: signal.DefaultHeartbeatInterval, Usage: "heartbeat `INTERVAL`; a stream silent for three intervals is dropped"},
	}
}

// ConfigFromFlags reads Flags.
func ConfigFromFlags(c *cli.Context) (Config, error) {
	cfg := Config{
		MaxMessageBytes:   c.Int("signal-max-message-bytes"),
		RatePerSecond:     c.Float64("signal-rate"),
		Burst:             c.Int("signal-burst"),
		QueueLen:          c.Int("signal-queue"),
		HeartbeatInterval: c.Duration("signal-heartbeat"),
	}
	switch {
	case cfg.MaxMessageBytes < 1024 || cfg.MaxMessageBytes > 1<<20:
		return cfg, fmt.Errorf("--signal-max-message-bytes %d: want 1024 to 1048576", cfg.MaxMessageBytes)
	case cfg.RatePerSecond <= 0:
		return cfg, fmt.Errorf("--signal-rate %g: want more than 0", cfg.RatePerSecond)
	case cfg.Burst < 1:
		return cfg, fmt.Errorf("--signal-burst %d: want at least 1", cfg.Burst)
	case cfg.QueueLen < 1:
		return cfg, fmt.Errorf("--signal-queue %d: want at least 1", cfg.QueueLen)
	case cfg.HeartbeatInterval < time.Second:
		return cfg, fmt.Errorf("--signal-heartbeat %s: want at least 1s", cfg.HeartbeatInterval)
	}
	return cfg, nil
}

// Start makes the signal service and mounts it on srv. It closes itself
// when ctx ends; closing it earlier (after srv.Serve returned) is fine too.
func Start(ctx context.Context, cfg Config, srv *server.Server, log *zap.Logger) (*signal.Server, error) {
	if len(cfg.ControlKey) != ed25519.PublicKeySize {
		return nil, errors.New("signal: no control key: signal registers only peers with a ticket from control, and needs control's key to check them")
	}
	sig := signal.New(signal.Options{
		TicketKey:         cfg.ControlKey,
		Log:               log.Named("signal"),
		MaxMessageBytes:   cfg.MaxMessageBytes,
		RatePerSecond:     cfg.RatePerSecond,
		Burst:             cfg.Burst,
		QueueLen:          cfg.QueueLen,
		HeartbeatInterval: cfg.HeartbeatInterval,
		Cluster:           cfg.Cluster,
	})
	if cfg.Cluster != nil && cfg.Heartbeat > 0 {
		if err := startHeartbeats(ctx, cfg, sig, log.Named("signal")); err != nil {
			_ = sig.Close()
			return nil, err
		}
	}
	sig.Mount(srv)
	context.AfterFunc(ctx, func() { _ = sig.Close() })
	return sig, nil
}

// Command is `meshd signal`.
func Command() *cli.Command {
	return &cli.Command{
		Name:  "signal",
		Usage: "run the signal role: forwards peers' sealed connection offers",
		Description: "Signal forwards end-to-end sealed messages (ICE offers and candidates) between agents,\n" +
			"addressed by WireGuard public key. It stores nothing. `meshd all` includes it.",
		Flags:  append(append(cliutil.ServerFlags(DefaultListen), append(Flags(), controlKeyFlag, storeFlag, publicURLFlag, cliutil.MetricsFlag("127.0.0.1:9183"))...), cliutil.LogFlags()...),
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
	if !c.IsSet("control-key") {
		return cliutil.Exit(2, "--control-key is required: signal registers only peers with a ticket from control; `meshd control` prints it at start (\"signal ticket key ...\")")
	}
	if cfg.ControlKey, err = signal.ParseControlKey(c.String("control-key")); err != nil {
		return cliutil.Exit(2, "--control-key: %v; copy the key `meshd control` prints at start", err)
	}
	listen := c.String("listen")
	var tlsConfig *tls.Config
	if c.Bool("insecure") {
		log.Warn("serving without TLS (--insecure): for labs only")
	} else {
		dir := c.String("data")
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return cliutil.Exit(1, "signal: data dir: %v", err)
		}
		host, _, _ := net.SplitHostPort(listen)
		ts, err := tlsconf.ServerConfig(cliutil.TLSOptions(c, host))
		if err != nil {
			return cliutil.Exit(1, "signal: %v", err)
		}
		tlsConfig = ts.Config
		if ts.Pin != "" {
			fmt.Fprintf(c.App.Writer, "signal TLS pin (self-signed certificate): %s\n", ts.Pin)
		}
	}
	// This instance alone, or with --store the network's other signal
	// instances (and control replicas) sharing that database.
	clu, err := openCluster(c.Context, c.String("store"), log)
	if err != nil {
		return cliutil.Exit(1, "signal: %v", err)
	}
	defer clu.Close()
	cfg.Cluster, cfg.Heartbeat = clu, DefaultHeartbeat
	cfg.Replica = cluster.Replica{SignalURL: c.String("public-url"), Version: version.String(), Started: time.Now()}
	ctx, stop := cliutil.SignalContext(c.Context)
	defer stop()
	srv := server.New(log, tlsConfig)
	srv.ConnLimits = srv.ConnLimits.WithTotal(c.Int("max-conns"))
	sig, err := Start(ctx, cfg, srv, log)
	if err != nil {
		return cliutil.Exit(1, "signal: %v", err)
	}
	ln, err := srv.Listen(listen)
	if err != nil {
		return cliutil.Exit(1, "signal: %v (is another process on that port? pick one with --listen)", err)
	}
	metricsDone, err := cliutil.ServeMetrics(ctx, log, c.String("metrics-listen"), sig)
	if err != nil {
		ln.Close()
		return cliutil.Exit(1, "signal: %v", err)
	}
	err = srv.Serve(ctx, ln)
	_ = sig.Close()
	stop()
	if merr := <-metricsDone; err == nil && merr != nil {
		err = merr
	}
	if err != nil {
		return cliutil.Exit(1, "signal: %v", err)
	}
	return nil
}
