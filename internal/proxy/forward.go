package proxy

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"
)

// Forward exposes a service of this machine on the agent's overlay
// address: connections from peers to Port go to Local.
type Forward struct {
	Port  uint16
	Local string // host:port
}

func (f Forward) String() string { return fmt.Sprintf("%d=%s", f.Port, f.Local) }

// ParseForward reads PORT=LOCAL, where LOCAL is HOST:PORT or a port alone
// (on 127.0.0.1).
func ParseForward(s string) (Forward, error) {
	ps, local, ok := strings.Cut(strings.TrimSpace(s), "=")
	if !ok {
		return Forward{}, fmt.Errorf("proxy: forward %q: want PORT=LOCAL, e.g. 8080=127.0.0.1:80 or 8080=80", s)
	}
	p, err := strconv.ParseUint(ps, 10, 16)
	if err != nil || p == 0 {
		return Forward{}, fmt.Errorf("proxy: forward %q: overlay port %q: want 1 to 65535", s, ps)
	}
	if lp, err := strconv.ParseUint(local, 10, 16); err == nil && lp > 0 {
		return Forward{Port: uint16(p), Local: net.JoinHostPort("127.0.0.1", local)}, nil
	}
	host, lps, err := net.SplitHostPort(local)
	if err != nil || host == "" {
		return Forward{}, fmt.Errorf("proxy: forward %q: local service %q: want HOST:PORT or a port", s, local)
	}
	if lp, err := strconv.ParseUint(lps, 10, 16); err != nil || lp == 0 {
		return Forward{}, fmt.Errorf("proxy: forward %q: local port %q: want 1 to 65535", s, lps)
	}
	return Forward{Port: uint16(p), Local: local}, nil
}

// ServeForward accepts the connections peers open on ln (a listener on
// the overlay address: the packet filter has judged them already) and
// joins each with a new connection to local, until ctx ends.
func ServeForward(ctx context.Context, ln net.Listener, local string, log *zap.Logger) error {
	if log == nil {
		log = zap.NewNop()
	}
	var d net.Dialer
	return serve(ctx, ln, log, func(ctx context.Context, c net.Conn) {
		dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		lc, err := d.DialContext(dctx, "tcp", local)
		if err != nil {
			log.Warn("forward: local service does not answer", zap.String("local", local), zap.Stringer("from", c.RemoteAddr()), zap.Error(err))
			return
		}
		pipe(ctx, c, lc)
	})
}
