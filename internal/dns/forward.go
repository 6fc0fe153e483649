package dns

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"sync"
	"time"

	mdns "github.com/miekg/dns"
)

// errBusy: too many queries in flight.
var errBusy = errors.New("too many queries in flight")

// forward sends req to servers in order (each within the timeout), then,
// when fallback is set, to the system resolver, and returns the first
// usable answer: one that is not SERVFAIL or REFUSED.
func (s *Server) forward(ctx context.Context, req *mdns.Msg, servers []netip.AddrPort, fallback bool) (*mdns.Msg, error) {
	select {
	case s.slots <- struct{}{}:
		defer func() { <-s.slots }()
	default:
		return nil, errBusy
	}
	own := s.Addrs()
	var errs []error
	try := func(list []netip.AddrPort) *mdns.Msg {
		for _, ap := range list {
			if slices.Contains(own, ap) {
				continue // never ourselves: that would loop
			}
			out, err := s.exchange(ctx, req, ap)
			if err == nil {
				return out
			}
			errs = append(errs, err)
			if ctx.Err() != nil {
				return nil
			}
		}
		return nil
	}
	if out := try(servers); out != nil {
		return out, nil
	}
	if sys := s.sys.servers(); fallback && !slices.Equal(sys, servers) {
		if out := try(sys); out != nil {
			return out, nil
		}
	}
	if len(errs) == 0 {
		return nil, errors.New("no upstream resolver")
	}
	return nil, errors.Join(errs...)
}

// exchange asks one server over UDP, and over TCP when the answer was
// truncated.
func (s *Server) exchange(ctx context.Context, req *mdns.Msg, ap netip.AddrPort) (*mdns.Msg, error) {
	m := req.Copy()
	m.Id = mdns.Id()
	ctx, cancel := context.WithTimeout(ctx, s.opts.Timeout)
	defer cancel()
	c := &mdns.Client{Net: "udp", Timeout: s.opts.Timeout, UDPSize: 4096}
	out, err := exchangeCtx(ctx, c, m, ap)
	if err == nil && out.Truncated {
		c.Net = "tcp"
		out, err = exchangeCtx(ctx, c, m, ap)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", ap, err)
	}
	if out.Rcode == mdns.RcodeServerFailure || out.Rcode == mdns.RcodeRefused {
		return nil, fmt.Errorf("%s: %s", ap, mdns.RcodeToString[out.Rcode])
	}
	return out, nil
}

// exchangeCtx is Client.ExchangeContext that also ends when ctx is
// cancelled (miekg/dns uses only its deadline).
func exchangeCtx(ctx context.Context, c *mdns.Client, m *mdns.Msg, ap netip.AddrPort) (*mdns.Msg, error) {
	conn, err := c.DialContext(ctx, ap.String())
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	out, _, err := c.ExchangeWithConnContext(ctx, m, conn)
	if err != nil && ctx.Err() != nil {
		return nil, ctx.Err()
	}
	return out, err
}

// systemResolvers are the fallback servers: fixed ones, or those of
// resolv.conf, read again when its modification time changes.
type systemResolvers struct {
	fixed []netip.AddrPort
	path  string

	mu    sync.Mutex
	mtime time.Time
	read  bool
	list  []netip.AddrPort
}

func (r *systemResolvers) servers() []netip.AddrPort {
	if r.fixed != nil {
		return r.fixed
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	fi, err := os.Stat(r.path)
	if err != nil {
		return nil
	}
	if r.read && fi.ModTime().Equal(r.mtime) {
		return r.list
	}
	r.read, r.mtime, r.list = true, fi.ModTime(), nil
	cc, err := mdns.ClientConfigFromFile(r.path)
	if err != nil {
		return nil
	}
	for _, s := range cc.Servers {
		a, err := netip.ParseAddr(s)
		if err != nil {
			continue
		}
		r.list = append(r.list, netip.AddrPortFrom(a.Unmap(), 53))
	}
	return r.list
}
