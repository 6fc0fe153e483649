// Package agent wires the agent role and its local clients: `meshd agent`
// (internal/agent's engine plus internal/daemon's socket), and `meshd
// status`, `meshd up` and `meshd down`, which talk to a running agent
// through that socket.
package agent

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"connectrpc.com/connect"
	"github.com/urfave/cli/v2"
	"go.uber.org/zap"

	daemonv1 "meshd/api/daemon/v1"
	"meshd/internal/agent"
	"meshd/internal/cliutil"
	"meshd/internal/daemon"
	"meshd/internal/debugpprof"
	"meshd/internal/dns"
	"meshd/internal/jointoken"
	"meshd/internal/memtrim"
	"meshd/internal/tlsconf"
	"meshd/wg"
)

// Defaults of the agent's flags.
const (
	DefaultState  = cliutil.DefaultAgentState
	DefaultSocket = cliutil.DefaultAgentSocket
	DefaultPort   = 51820
)

func socketFlag() cli.Flag {
	return &cli.StringFlag{Name: "socket", Value: DefaultSocket, Usage: "the agent's local API socket `PATH` " +
		"(not root: $XDG_RUNTIME_DIR/meshd.sock, or meshd.sock in the user's state directory)"}
}

// Command is `meshd agent`.
func Command() *cli.Command {
	return &cli.Command{
		Name:  "agent",
		Usage: "run on every machine: join the mesh and keep its tunnels",
		Description: "Joins with a join token (printed by `meshd all`), or with --control and --setup-key.\n" +
			"After the first join the state directory holds the identity: restarts need neither.\n" +
			"Several agents can share a machine (in different network namespaces) when --state,\n" +
			"--iface and --socket differ.",
		Flags: append([]cli.Flag{
			&cli.StringFlag{Name: "join", Usage: "join `TOKEN` from `meshd all` (control URL, pin and setup key in one)"},
			&cli.StringFlag{Name: "control", Usage: "control's `URL` (https://host:port)"},
			&cli.StringFlag{Name: "setup-key", Usage: "setup `KEY` for the first join (or after the login expired)"},
			&cli.BoolFlag{Name: "sso", Usage: "join by single sign-on: prints a URL and a code to approve in any browser (control needs --oidc-issuer)"},
			&cli.BoolFlag{Name: "sso-browser", Usage: "join by single sign-on in a browser on this machine (authorization code flow with PKCE) instead of a code"},
			&cli.StringFlag{Name: "tls-pin", Usage: "pin of control's self-signed certificate, `sha256:HEX`"},
			&cli.StringFlag{Name: "state", Value: DefaultState, Usage: "state `DIR`: the WireGuard key and what a restart needs " +
				"(not root: $XDG_STATE_HOME/meshd-agent or ~/.local/state/meshd-agent)"},
			&cli.StringFlag{Name: "iface", Value: wg.DefaultName, Usage: "WireGuard interface `NAME`"},
			&cli.IntFlag{Name: "port", Value: DefaultPort, Usage: "WireGuard UDP `PORT` (0: any)"},
			socketFlag(),
			&cli.StringFlag{Name: "socket-mode", Value: "0600", Usage: "file `MODE` of the socket (0660 lets the socket's group use the CLI)"},
			&cli.StringFlag{Name: "wg-mode", Value: string(wg.ModeAuto), Usage: "`MODE`: auto (userspace), userspace (wireguard-go on a TUN), kernel (experimental: kernel WireGuard, never picked by auto) " +
				"or netstack (no root; programs reach the mesh through --socks5 or --http-proxy, peers reach this machine through --forward)"},
			&cli.StringFlag{Name: "hostname", Usage: "`NAME` to register (default: the machine's hostname)"},
			&cli.BoolFlag{Name: "dns", Value: true, Usage: "run the mesh resolver on the overlay address, port 53 (peer names, custom records, nameserver groups); " +
				"with systemd-resolved, send the mesh domain to it (--dns=false: off)"},
			&cli.BoolFlag{Name: "dns-resolv-conf", Value: true, Usage: "without systemd-resolved, write " + dns.DefaultResolvConf + " so that the system asks the mesh resolver first " +
				"and short names work (the original is kept in --state and restored on exit, or at the next start after a crash)"},
			&cli.StringFlag{Name: "dns-listen", Usage: "also answer DNS on `ADDR:PORT`, e.g. 127.0.0.1:5353 (netstack mode: loopback, a free port unless given)"},
			&cli.StringSliceFlag{Name: "dns-fallback", Usage: "resolvers (`IP[:PORT]`) for names outside the mesh that no nameserver group takes, or when a group's servers fail " +
				"(default: those of /etc/resolv.conf; none: answer SERVFAIL instead)"},
			&cli.DurationFlag{Name: "mem-trim", Value: memtrim.DefaultQuiet, Usage: "give memory back to the OS once the tunnel has been quiet for `DURATION` " +
				"(wireguard-go keeps the buffers of a bulk transfer otherwise; 0: never)"},
			&cli.BoolFlag{Name: "post-quantum", Value: true, Usage: "take part in post-quantum pre-shared key exchanges with peers when the account " +
				"turns them on (meshd admin account update --post-quantum); --post-quantum=false: peers connect without (permissive) or not at all (strict)"},
			&cli.DurationFlag{Name: "post-quantum-rotate", Hidden: true, Usage: "rotate post-quantum keys every `DURATION` instead of 2m (lab tests)"},
			cliutil.MetricsFlag("127.0.0.1:9182"),
			&cli.BoolFlag{Name: "metrics-peer-labels", Usage: "add per-peer series to /metrics, labelled with peer names (more series; names show who talks to whom)"},
			&cli.StringFlag{Name: "pprof-listen", Hidden: true, Usage: "serve Go profiles (net/http/pprof) on `ADDR`: a unix socket path, or a loopback host:port; for debugging"},
		}, append(proxyFlags(), cliutil.LogFlags()...)...),
		Action: runAgent,
	}
}

// agentOptions turns the flags into engine options.
func agentOptions(c *cli.Context) (agent.Options, os.FileMode, error) {
	var o agent.Options
	o.ControlURL, o.Pin, o.SetupKey = c.String("control"), c.String("tls-pin"), strings.TrimSpace(c.String("setup-key"))
	if j := c.String("join"); j != "" {
		if o.ControlURL != "" || o.Pin != "" {
			return o, 0, errors.New("--join carries the control URL and pin: drop --control and --tls-pin")
		}
		t, err := jointoken.Decode(j)
		if err != nil {
			return o, 0, err
		}
		o.ControlURL, o.Pin, o.ControlURLs = t.ControlURL, t.Pin, t.MoreURLs
		if o.SetupKey == "" {
			o.SetupKey = t.SetupKey
		}
	}
	if o.Pin != "" {
		p, err := tlsconf.ParsePin(o.Pin)
		if err != nil {
			return o, 0, err
		}
		o.Pin = p
	}
	if o.SetupKey != "" && o.ControlURL == "" {
		return o, 0, errors.New("--setup-key needs --control URL (or use --join TOKEN)")
	}
	o.SSOBrowser = c.Bool("sso-browser")
	if o.SSO = c.Bool("sso") || o.SSOBrowser; o.SSO && o.SetupKey != "" {
		return o, 0, errors.New("--sso and a setup key: join one way, drop --setup-key (or --sso)")
	}
	port := c.Int("port")
	if port < 0 || port > 65535 {
		return o, 0, fmt.Errorf("--port %d: want 0 to 65535", port)
	}
	mode := wg.Mode(c.String("wg-mode"))
	switch mode {
	case wg.ModeAuto, wg.ModeUserspace, wg.ModeKernel, wg.ModeNetstack:
	default:
		return o, 0, fmt.Errorf("--wg-mode %q: want auto, userspace, kernel or netstack", mode)
	}
	sm, err := strconv.ParseUint(c.String("socket-mode"), 8, 32)
	if err != nil || sm&^0o777 != 0 || sm&0o600 != 0o600 {
		return o, 0, fmt.Errorf("--socket-mode %q: want an octal mode the owner can use, e.g. 0600 or 0660", c.String("socket-mode"))
	}
	o.StateDir = statePath(c)
	o.Hostname = c.String("hostname")
	o.Device = wg.Config{Mode: mode, Name: c.String("iface"), ListenPort: uint16(port)}
	o.DNS = agent.DNSOptions{Disabled: !c.Bool("dns"), ConfigureOS: true}
	o.PostQuantumOff = !c.Bool("post-quantum")
	if d := c.Duration("post-quantum-rotate"); d > 0 {
		o.PQTiming = &agent.PQTiming{Rotate: d}
	}
	if c.Bool("dns-resolv-conf") {
		o.DNS.ResolvConf, o.DNS.BackupDir = dns.DefaultResolvConf, o.StateDir
	}
	if l := c.String("dns-listen"); l != "" {
		ap, err := netip.ParseAddrPort(l)
		if err != nil {
			return o, 0, fmt.Errorf("--dns-listen %q: want ADDR:PORT, e.g. 127.0.0.1:5353", l)
		}
		o.DNS.Listen = ap
	}
	if fb := c.StringSlice("dns-fallback"); len(fb) > 0 {
		o.DNS.System = []netip.AddrPort{}
		for _, f := range fb {
			if f == "none" {
				continue
			}
			ap, err := dns.ParseServer(f)
			if err != nil {
				return o, 0, fmt.Errorf("--dns-fallback: %v", err)
			}
			o.DNS.System = append(o.DNS.System, ap)
		}
	}
	o.Clients = agent.RealClients()
	o.Check = wg.Check // before every login: a machine that cannot run registers nothing
	return o, os.FileMode(sm), nil
}

func runAgent(c *cli.Context) error {
	log, err := cliutil.Logger(c)
	if err != nil {
		return cliutil.Exit(2, "%v", err)
	}
	defer func() { _ = log.Sync() }()
	opts, mode, err := agentOptions(c)
	if err != nil {
		return cliutil.Exit(2, "%v", err)
	}
	pl, err := proxyOptions(c, &opts)
	if err != nil {
		return cliutil.Exit(2, "%v", err)
	}
	opts.Log = log
	var trim *memtrim.Trimmer
	switch quiet := c.Duration("mem-trim"); {
	case quiet < 0:
		return cliutil.Exit(2, "--mem-trim %v: want a duration such as 2s, or 0 to turn it off", quiet)
	case quiet > 0:
		trim = watchMemory(&opts, quiet, log)
	}
	eng, err := agent.New(opts)
	if err != nil {
		return cliutil.Exit(1, "%v", err)
	}
	// An agent that did not stop cleanly may have left its resolv.conf.
	if ok, err := dns.RecoverResolvConf(dns.DefaultResolvConf, opts.StateDir); err != nil {
		log.Error("mesh DNS: restore resolv.conf left by an earlier run", zap.Error(err))
	} else if ok {
		log.Info("mesh DNS: restored the resolv.conf an earlier run left", zap.String("file", dns.DefaultResolvConf))
	}
	ln, err := daemon.Listen(socketPath(c), mode)
	if err != nil {
		return cliutil.Exit(1, "%v", err)
	}
	ctx, cancel := cliutil.SignalContext(c.Context)
	defer cancel()
	if addr := c.String("pprof-listen"); addr != "" {
		pln, err := debugpprof.Listen(addr)
		if err != nil {
			return cliutil.Exit(1, "--pprof-listen: %v", err)
		}
		profDone := make(chan struct{})
		go func() { defer close(profDone); _ = debugpprof.Serve(ctx, pln) }()
		defer func() { cancel(); <-profDone }()
		log.Warn("serving Go profiles (debug)", zap.String("pprof_listen", addr))
	}
	if addr := c.String("metrics-listen"); addr != "" {
		m := agent.NewMetrics(eng, agent.MetricsOptions{PeerLabels: c.Bool("metrics-peer-labels")})
		served, err := cliutil.ServeMetrics(ctx, log, addr, m)
		if err != nil {
			ln.Close()
			return cliutil.Exit(1, "%v", err)
		}
		sampled := make(chan struct{})
		go func() { defer close(sampled); m.Run(ctx, 0) }()
		defer func() { cancel(); <-sampled; <-served }()
	}
	if trim != nil {
		trimDone := make(chan struct{})
		go func() { defer close(trimDone); trim.Run(ctx) }()
		defer func() { cancel(); <-trimDone }()
	}
	waitProxies, err := startProxies(ctx, log, eng, pl)
	if err != nil {
		ln.Close()
		eng.Close()
		return cliutil.Exit(1, "%v", err)
	}
	defer func() { cancel(); waitProxies() }()
	log.Info("agent starting", zap.Stringer("public_key", eng.PublicKey()), zap.String("state", opts.StateDir),
		zap.String("iface", opts.Device.Name), zap.String("socket", socketPath(c)))
	served := make(chan error, 1)
	go func() { served <- daemon.Serve(ctx, ln, eng, log.Named("daemon")) }()
	err = eng.Run(ctx)
	cancel()
	if serr := <-served; serr != nil && err == nil {
		log.Warn("local api", zap.Error(serr))
	}
	if err != nil {
		return cliutil.Exit(1, "%v", err)
	}
	log.Info("agent stopped")
	return nil
}

// watchMemory returns a memory trimmer that watches the traffic of every
// device the engine makes (opts.NewDevice is wrapped for that).
func watchMemory(opts *agent.Options, quiet time.Duration, log *zap.Logger) *memtrim.Trimmer {
	tr := memtrim.New(memtrim.Options{Policy: memtrim.Policy{Quiet: quiet}, Log: log.Named("memtrim")})
	newDevice := opts.NewDevice
	if newDevice == nil {
		newDevice = wg.New
	}
	opts.NewDevice = func(ctx context.Context, cfg wg.Config) (wg.Device, error) {
		dev, err := newDevice(ctx, cfg)
		if err == nil {
			tr.Watch(func() uint64 { c := dev.Counters(); return c.RxBytes + c.TxBytes })
		}
		return dev, err
	}
	return tr
}

// StatusCommand is `meshd status`.
func StatusCommand() *cli.Command {
	return &cli.Command{
		Name:  "status",
		Usage: "show this machine's peers and paths",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "json", Usage: "print JSON (field names are stable, for scripts)"},
			socketFlag(),
		},
		Action: func(c *cli.Context) error {
			path := socketPath(c)
			ctx, cancel := context.WithTimeout(c.Context, 10*time.Second)
			defer cancel()
			resp, err := daemon.Client(path).Status(ctx, connect.NewRequest(&daemonv1.StatusRequest{}))
			if err != nil {
				return cliutil.Exit(1, "%v", daemon.Explain(path, err))
			}
			if c.Bool("json") {
				return daemon.WriteJSON(c.App.Writer, resp.Msg)
			}
			return daemon.WriteTable(c.App.Writer, resp.Msg, time.Now())
		},
	}
}

// UpCommand is `meshd up`.
func UpCommand() *cli.Command {
	return &cli.Command{
		Name:  "up",
		Usage: "start the tunnel (after `meshd down`, or with a new setup key)",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "setup-key", Usage: "setup `KEY`, when control asks for one"},
			&cli.BoolFlag{Name: "sso", Usage: "log in by single sign-on: prints a URL and a code to approve in any browser"},
			&cli.BoolFlag{Name: "browser", Usage: "with --sso: log in in a browser on this machine (opened when possible) instead of with a code"},
			socketFlag(),
		},
		Action: func(c *cli.Context) error {
			path := socketPath(c)
			if c.Bool("sso") {
				return upSSO(c, path)
			}
			ctx, cancel := context.WithTimeout(c.Context, 30*time.Second)
			defer cancel()
			_, err := daemon.Client(path).Up(ctx, connect.NewRequest(&daemonv1.UpRequest{SetupKey: strings.TrimSpace(c.String("setup-key"))}))
			if err != nil {
				return cliutil.Exit(1, "%v", daemon.Explain(path, err))
			}
			fmt.Fprintln(c.App.Writer, "up")
			return nil
		},
	}
}

// DownCommand is `meshd down`.
func DownCommand() *cli.Command {
	return &cli.Command{
		Name:  "down",
		Usage: "stop the tunnel, keeping this machine's identity",
		Flags: []cli.Flag{socketFlag()},
		Action: func(c *cli.Context) error {
			path := socketPath(c)
			ctx, cancel := context.WithTimeout(c.Context, 30*time.Second)
			defer cancel()
			if _, err := daemon.Client(path).Down(ctx, connect.NewRequest(&daemonv1.DownRequest{})); err != nil {
				return cliutil.Exit(1, "%v", daemon.Explain(path, err))
			}
			fmt.Fprintln(c.App.Writer, "down")
			return nil
		},
	}
}
