package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"

	"github.com/urfave/cli/v2"
	"go.uber.org/zap"

	"meshd/internal/agent"
	"meshd/internal/cliutil"
	"meshd/internal/proxy"
	"meshd/wg"
)

// proxyFlags are the flags of userspace networking (netstack mode).
func proxyFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "socks5", Usage: "netstack mode: serve a SOCKS5 proxy (CONNECT, UDP ASSOCIATE) into the mesh on `ADDR` (PORT or HOST:PORT; a port alone " +
			"is on 127.0.0.1); it reaches peers by overlay address or mesh name, and refuses anything the policies do not let this peer reach"},
		&cli.StringFlag{Name: "http-proxy", Usage: "netstack mode: serve an HTTP proxy (CONNECT and http:// requests) into the mesh on `ADDR`, as --socks5"},
		&cli.StringSliceFlag{Name: "forward", Usage: "netstack mode: expose a service of this machine to the mesh: `PORT=LOCAL` listens on the overlay address " +
			"at PORT and connects to LOCAL (HOST:PORT, or a port on 127.0.0.1); repeatable; the policies decide which peers may connect"},
	}
}

// proxyListen is where the proxies listen ("" for none).
type proxyListen struct {
	socks5, http string
}

// proxyOptions reads the proxy flags into o (Forwards) and the listen
// addresses; all need netstack mode.
func proxyOptions(c *cli.Context, o *agent.Options) (proxyListen, error) {
	var pl proxyListen
	for _, name := range []string{"socks5", "http-proxy", "forward"} {
		if c.IsSet(name) && o.Device.Mode != wg.ModeNetstack {
			return pl, fmt.Errorf("--%s needs --wg-mode netstack (with a TUN, programs reach the mesh and peers reach this machine directly)", name)
		}
	}
	for _, f := range []struct {
		name string
		to   *string
	}{{"socks5", &pl.socks5}, {"http-proxy", &pl.http}} {
		if s := c.String(f.name); s != "" {
			addr, _, err := proxy.ParseListen(s)
			if err != nil {
				return pl, fmt.Errorf("--%s: %v", f.name, err)
			}
			*f.to = addr
		}
	}
	seen := map[uint16]bool{}
	for _, s := range c.StringSlice("forward") {
		f, err := proxy.ParseForward(s)
		if err != nil {
			return pl, fmt.Errorf("--forward: %v", err)
		}
		if seen[f.Port] {
			return pl, fmt.Errorf("--forward %s: port %d is forwarded twice", s, f.Port)
		}
		if f.Port == 53 && !o.DNS.Disabled {
			return pl, fmt.Errorf("--forward %s: port 53 of the overlay address is the mesh resolver's: pick another port (or --dns=false)", s)
		}
		seen[f.Port] = true
		o.Forwards = append(o.Forwards, f)
	}
	return pl, nil
}

// startProxies binds the proxies' listeners and serves them through eng
// until ctx ends; wait waits for them.
func startProxies(ctx context.Context, log *zap.Logger, eng *agent.Engine, pl proxyListen) (wait func(), err error) {
	var lns []net.Listener
	var serves []func(context.Context, net.Listener) error
	add := func(flag, addr string, serve func(context.Context, net.Listener) error) error {
		if addr == "" {
			return nil
		}
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return fmt.Errorf("--%s: %w (pick another port)", flag, err)
		}
		lns, serves = append(lns, ln), append(serves, serve)
		fields := []zap.Field{zap.String("listen", ln.Addr().String())}
		if _, public, _ := proxy.ParseListen(addr); public {
			log.Warn(flag+" listens beyond this machine: anyone who reaches it uses the mesh as this peer (no authentication)", fields...)
		} else {
			log.Info(flag+" proxy into the mesh", fields...)
		}
		return nil
	}
	errs := errors.Join(
		add("socks5", pl.socks5, (&proxy.SOCKS5{Mesh: eng.Mesh(), Log: log.Named("socks5")}).Serve),
		add("http-proxy", pl.http, (&proxy.HTTP{Mesh: eng.Mesh(), Log: log.Named("http-proxy")}).Serve),
	)
	if errs != nil {
		for _, ln := range lns {
			ln.Close()
		}
		return nil, errs
	}
	done := make(chan struct{}, len(lns))
	for i, ln := range lns {
		go func() {
			defer func() { done <- struct{}{} }()
			if err := serves[i](ctx, ln); err != nil {
				log.Error("proxy stopped", zap.Error(err))
			}
		}()
	}
	return func() {
		for range lns {
			<-done
		}
	}, nil
}

// statePath and socketPath are --state and --socket, or the defaults for
// the user running (cliutil.AgentStateFor): an agent run without root
// keeps its state in the user's home.
func statePath(c *cli.Context) string {
	if c.IsSet("state") {
		return c.String("state")
	}
	return cliutil.AgentStateFor(os.Geteuid())
}

func socketPath(c *cli.Context) string {
	if c.IsSet("socket") {
		return c.String("socket")
	}
	return cliutil.AgentSocketFor(os.Geteuid())
}
