// Package relay wires the relay role: flags to configuration, start, stop.
// `meshd relay` serves nat/relay alone (STUN/TURN on UDP and TCP, TURN over
// TLS on its own port, metrics on another); roles/all runs the same server
// in its process through Start, with the secret control keeps and the
// TURN side of the HTTPS port (relay.SplitTLS).
package relay

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/urfave/cli/v2"
	"go.uber.org/zap"

	"meshd/internal/cliutil"
	"meshd/internal/server"
	"meshd/internal/tlsconf"
	"meshd/nat/relay"
)

// Config is the relay's configuration. Secret or SecretFunc is required;
// the zero value of everything else means the nat/relay default, except
// PublicIP, which Start fills from the default route when unset.
type Config struct {
	Listen      string // UDP and TCP, default ":3478"
	NoTCP       bool
	PublicIP    netip.Addr
	RelayBindIP netip.Addr
	PortMin     uint16
	PortMax     uint16
	Realm       string

	Secret     []byte
	SecretFunc func() []byte

	// TLSListener serves TURN over TLS: in roles/all the TURN side of
	// relay.SplitTLS on the HTTPS port. The relay closes it.
	TLSListener net.Listener

	MaxAllocationsPerUser int
	MaxAllocations        int
	MaxLifetime           time.Duration

	// AllowPeers opens peer ranges the relay refuses by default (private,
	// loopback, CGNAT, ...) for a private deployment.
	AllowPeers []netip.Prefix
	// UserValid: control's word on whether a credential's peer may still
	// use the relay (roles/all, where both run in one process).
	UserValid func(id string) bool
}

// Flags are the relay's own flags; roles/all includes them too (it brings
// its own TLS flags and secret).
func Flags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "stun-listen", Value: relay.DefaultListenAddr, Usage: "`HOST:PORT` for STUN and TURN over UDP, and TURN over TCP on the same port"},
		&cli.BoolFlag{Name: "no-turn-tcp", Usage: "do not serve TURN over TCP on --stun-listen"},
		&cli.StringFlag{Name: "relay-ip", Usage: "public IPv4 `ADDRESS` peers reach relayed ports on (default: the address of the default route's interface; set it behind 1:1 NAT)"},
		&cli.StringFlag{Name: "relay-bind-ip", Usage: "local IPv4 `ADDRESS` to bind relayed ports on (default: --relay-ip if local, else 0.0.0.0)"},
		&cli.StringFlag{Name: "relay-ports", Value: fmt.Sprintf("%d-%d", relay.DefaultPortMin, relay.DefaultPortMax), Usage: "UDP port `RANGE` (A-B) of relayed addresses"},
		&cli.StringFlag{Name: "turn-realm", Value: relay.DefaultRealm, Usage: "TURN `REALM` of the credentials"},
		&cli.IntFlag{Name: "turn-user-quota", Value: relay.DefaultMaxAllocationsPerUser, Usage: "at most `N` allocations per credential id (one peer)"},
		&cli.IntFlag{Name: "turn-total-quota", Value: relay.DefaultMaxAllocations, Usage: "at most `N` allocations in all"},
		&cli.DurationFlag{Name: "turn-max-lifetime", Value: relay.DefaultMaxLifetime, Usage: "end any allocation after `DURATION`, refreshed or not"},
		&cli.StringSliceFlag{Name: "relay-allow-peer", Usage: "let allocations relay to `CIDR` though it is private, loopback, CGNAT or link-local (refused by default; repeatable; for private deployments whose peers live there)"},
	}
}

// ConfigFromFlags reads Flags. The secret and the TLS listener are the
// caller's.
func ConfigFromFlags(c *cli.Context) (Config, error) {
	cfg := Config{
		Listen:                c.String("stun-listen"),
		NoTCP:                 c.Bool("no-turn-tcp"),
		Realm:                 c.String("turn-realm"),
		MaxAllocationsPerUser: c.Int("turn-user-quota"),
		MaxAllocations:        c.Int("turn-total-quota"),
		MaxLifetime:           c.Duration("turn-max-lifetime"),
	}
	if _, _, err := net.SplitHostPort(cfg.Listen); err != nil {
		return cfg, fmt.Errorf("--stun-listen %q: want HOST:PORT (e.g. :3478)", cfg.Listen)
	}
	var err error
	if s := c.String("relay-ip"); s != "" {
		if cfg.PublicIP, err = parseIPv4(s); err != nil {
			return cfg, fmt.Errorf("--relay-ip: %w", err)
		}
	}
	if s := c.String("relay-bind-ip"); s != "" {
		if cfg.RelayBindIP, err = parseIPv4(s); err != nil {
			return cfg, fmt.Errorf("--relay-bind-ip: %w", err)
		}
	}
	for _, v := range c.StringSlice("relay-allow-peer") {
		p, err := netip.ParsePrefix(strings.TrimSpace(v))
		if err != nil {
			return cfg, fmt.Errorf("--relay-allow-peer %q: want a CIDR prefix such as 10.0.0.0/8", v)
		}
		cfg.AllowPeers = append(cfg.AllowPeers, p.Masked())
	}
	if cfg.PortMin, cfg.PortMax, err = ParsePortRange(c.String("relay-ports")); err != nil {
		return cfg, fmt.Errorf("--relay-ports: %w", err)
	}
	switch {
	case cfg.MaxAllocationsPerUser < 1:
		return cfg, fmt.Errorf("--turn-user-quota %d: want at least 1", cfg.MaxAllocationsPerUser)
	case cfg.MaxAllocations < 1:
		return cfg, fmt.Errorf("--turn-total-quota %d: want at least 1", cfg.MaxAllocations)
	case cfg.MaxLifetime < time.Minute:
		return cfg, fmt.Errorf("--turn-max-lifetime %s: want at least 1m", cfg.MaxLifetime)
	}
	return cfg, nil
}

func parseIPv4(s string) (netip.Addr, error) {
	ip, err := netip.ParseAddr(s)
	if err != nil || !ip.Unmap().Is4() {
		return netip.Addr{}, fmt.Errorf("%q is not an IPv4 address", s)
	}
	return ip.Unmap(), nil
}

// ParsePortRange parses "A-B" (or a single port "A").
func ParsePortRange(s string) (lo, hi uint16, err error) {
	a, b, found := strings.Cut(s, "-")
	if !found {
		b = a
	}
	pa, errA := strconv.ParseUint(strings.TrimSpace(a), 10, 16)
	pb, errB := strconv.ParseUint(strings.TrimSpace(b), 10, 16)
	if errA != nil || errB != nil || pa == 0 || pb < pa {
		return 0, 0, fmt.Errorf("%q: want A-B with 1 <= A <= B <= 65535 (e.g. 49152-65535)", s)
	}
	return uint16(pa), uint16(pb), nil
}

// DefaultPublicIP is the IPv4 address of the interface of the default
// route: the public address on a VPS that has it on an interface. Behind
// 1:1 NAT (most clouds) it is the private one and --relay-ip must be set.
func DefaultPublicIP() (netip.Addr, error) {
	c, err := net.Dial("udp4", "192.0.2.1:9") // no packet is sent
	if err != nil {
		return netip.Addr{}, fmt.Errorf("no default route to take the relay address from; set --relay-ip: %w", err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).AddrPort().Addr().Unmap(), nil
}

// Start starts the relay. It closes itself when ctx ends; closing it
// earlier is fine too.
func Start(ctx context.Context, cfg Config, log *zap.Logger) (*relay.Server, error) {
	log = log.Named("relay")
	if !cfg.PublicIP.IsValid() {
		ip, err := DefaultPublicIP()
		if err != nil {
			return nil, err
		}
		cfg.PublicIP = ip
		if ip.IsPrivate() || ip.IsLoopback() {
			log.Warn("relay address taken from the default route is not public; peers outside this network cannot use the relay: set --relay-ip", zap.Stringer("relay_ip", ip))
		} else {
			log.Info("relay address taken from the default route (set --relay-ip to change it)", zap.Stringer("relay_ip", ip))
		}
	}
	s, err := relay.New(relay.Options{
		Log:                   log,
		Secret:                cfg.Secret,
		SecretFunc:            cfg.SecretFunc,
		Realm:                 cfg.Realm,
		PublicIP:              cfg.PublicIP,
		RelayBindIP:           cfg.RelayBindIP,
		ListenAddr:            cfg.Listen,
		NoTCP:                 cfg.NoTCP,
		TLSListener:           cfg.TLSListener,
		PortMin:               cfg.PortMin,
		PortMax:               cfg.PortMax,
		MaxAllocationsPerUser: cfg.MaxAllocationsPerUser,
		MaxAllocations:        cfg.MaxAllocations,
		MaxLifetime:           cfg.MaxLifetime,
		AllowPeers:            cfg.AllowPeers,
		UserValid:             cfg.UserValid,
	})
	if err != nil {
		return nil, err
	}
	context.AfterFunc(ctx, func() { _ = s.Close() })
	return s, nil
}

// ReadSecret returns the TURN secret of --turn-secret or
// --turn-secret-file (trimmed), or an error that says how to give one.
func ReadSecret(c *cli.Context) ([]byte, error) {
	s, file := c.String("turn-secret"), c.String("turn-secret-file")
	switch {
	case s != "" && file != "":
		return nil, errors.New("give --turn-secret or --turn-secret-file, not both")
	case file != "":
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, fmt.Errorf("--turn-secret-file: %w", err)
		}
		s = strings.TrimSpace(string(b))
		if s == "" {
			return nil, fmt.Errorf("--turn-secret-file %s is empty", file)
		}
	case s == "":
		return nil, errors.New("no TURN secret: give --turn-secret or --turn-secret-file (" + cliutil.EnvName("turn-secret") + "), the secret control issues TURN credentials with")
	}
	if len(s) < 16 {
		return nil, errors.New("the TURN secret is shorter than 16 characters; use a long random one (e.g. openssl rand -hex 32)")
	}
	return []byte(s), nil
}

// Command is `meshd relay`.
func Command() *cli.Command {
	flags := append(Flags(),
		&cli.StringFlag{Name: "turn-secret", Usage: "TURN REST `SECRET` shared with control (prefer --turn-secret-file or the environment)"},
		&cli.StringFlag{Name: "turn-secret-file", Usage: "`FILE` holding the TURN secret"},
		&cli.StringFlag{Name: "turn-tls-listen", Usage: "`HOST:PORT` for TURN over TLS (e.g. :443 or :5349), for peers whose networks allow only TCP"},
		cliutil.MetricsFlag("127.0.0.1:9180"),
	)
	flags = append(flags, tlsFlags()...)
	return &cli.Command{
		Name:  "relay",
		Usage: "run the relay role: STUN and TURN for peers without a direct path",
		Description: "The relay answers STUN (address discovery) and relays WireGuard ciphertext over TURN for\n" +
			"peers that cannot reach each other directly: over UDP, TCP, and TLS (--turn-tls-listen).\n" +
			"Credentials are time-limited HMACs that control issues with the shared --turn-secret.\n" +
			"`meshd all` includes it.",
		Flags:  append(flags, cliutil.LogFlags()...),
		Action: run,
	}
}

// tlsFlags are the certificate flags of cliutil.ServerFlags (the relay has
// no HTTPS listener of its own, so not --listen or --insecure).
func tlsFlags() []cli.Flag {
	var out []cli.Flag
	for _, f := range cliutil.ServerFlags("") {
		if !slices.Contains([]string{"listen", "insecure"}, f.Names()[0]) {
			out = append(out, f)
		}
	}
	return out
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
	if cfg.Secret, err = ReadSecret(c); err != nil {
		return cliutil.Exit(2, "relay: %v", err)
	}
	if addr := c.String("turn-tls-listen"); addr != "" {
		dir := c.String("data")
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return cliutil.Exit(1, "relay: data dir: %v", err)
		}
		hosts := []string{}
		if cfg.PublicIP.IsValid() {
			hosts = append(hosts, cfg.PublicIP.String())
		}
		ts, err := tlsconf.ServerConfig(cliutil.TLSOptions(c, hosts...))
		if err != nil {
			return cliutil.Exit(1, "relay: %v", err)
		}
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return cliutil.Exit(1, "relay: listen --turn-tls-listen %s: %v", addr, err)
		}
		lim := server.NewConnLimiter(ln, server.DefaultConnLimits(), log.Named("connlimit"))
		cfg.TLSListener = lim.Established(relay.TURNOverTLS(lim, ts.Config))
		if ts.Pin != "" {
			fmt.Fprintf(c.App.Writer, "relay TLS pin (self-signed certificate): %s\n", ts.Pin)
		}
	}
	ctx, stop := cliutil.SignalContext(c.Context)
	defer stop()
	s, err := Start(ctx, cfg, log)
	if err != nil {
		if cfg.TLSListener != nil {
			cfg.TLSListener.Close()
		}
		return cliutil.Exit(1, "relay: %v (is another process on the port? pick one with --stun-listen)", err)
	}
	defer s.Close()

	serveErr, err := cliutil.ServeMetrics(ctx, log, c.String("metrics-listen"), s)
	if err != nil {
		return cliutil.Exit(1, "relay: %v", err)
	}
	<-ctx.Done()
	err = s.Close()
	if e := <-serveErr; e != nil && err == nil {
		err = e
	}
	st := s.Stats()
	log.Info("relay totals", zap.Uint64("allocations", st.AllocationsTotal),
		zap.Uint64("bytes_to_peers", st.BytesToPeers), zap.Uint64("bytes_from_peers", st.BytesFromPeers))
	if err != nil {
		return cliutil.Exit(1, "relay: %v", err)
	}
	return nil
}
