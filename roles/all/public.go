package all

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/pion/stun/v2"
	"go.uber.org/zap"
)

// lookupFunc resolves a host name to addresses (net.Resolver.LookupNetIP).
type lookupFunc func(ctx context.Context, network, host string) ([]netip.Addr, error)

// relayIPForHost returns the IPv4 address the relay announces relayed
// addresses on when --public-url names host and --relay-ip is not given:
// the address itself, or what the name resolves to. Without it the relay
// would take the default route's address, which in a container or behind
// 1:1 NAT is a private one no peer outside can reach. A name that resolves
// to no usable IPv4 address (none, or only loopback as /etc/hosts often
// maps the machine's own name) is an error that names --relay-ip.
func relayIPForHost(ctx context.Context, host string, lookup lookupFunc) (netip.Addr, error) {
	if ip, err := netip.ParseAddr(host); err == nil {
		if ip = ip.Unmap(); ip.Is4() {
			return ip, nil
		}
		return netip.Addr{}, fmt.Errorf("--public-url host %s is IPv6 and relayed addresses are IPv4: give --relay-ip", host)
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	addrs, err := lookup(ctx, "ip4", host)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("resolve --public-url host %s for the relay address: %w (give --relay-ip)", host, err)
	}
	for _, a := range addrs {
		a = a.Unmap()
		if a.Is4() && !a.IsLoopback() && !a.IsUnspecified() && !a.IsLinkLocalUnicast() {
			return a, nil
		}
	}
	return netip.Addr{}, fmt.Errorf("--public-url host %s resolves to no usable IPv4 address (%v): give --relay-ip", host, addrs)
}

// publicURLWarning is what `meshd all` says at start about the address in
// its join line when --public-url was not given, or "". urlHost was taken
// from the default route's interface, which on a cloud VM behind 1:1 NAT
// is the private address; seen, a STUN server's view of this host (the
// zero value when none answered) shows the address the internet knows.
func publicURLWarning(urlHost string, seen netip.Addr, port string) string {
	host, err := netip.ParseAddr(urlHost)
	if err != nil {
		return ""
	}
	host = host.Unmap()
	seen = seen.Unmap()
	switch {
	case seen.IsValid() && seen != host:
		return fmt.Sprintf("no --public-url: the join line and the relay use %s (the default route's address), but a STUN server sees this host as %s, as behind 1:1 NAT: machines outside cannot reach %s; restart with --public-url https://%s and --relay-ip %s",
			host, seen, host, net.JoinHostPort(seen.String(), port), seen)
	case !seen.IsValid() && (host.IsPrivate() || host.IsLoopback() || host.IsLinkLocalUnicast() || cgnat.Contains(host)):
		return fmt.Sprintf("no --public-url: the join line and the relay use %s (the default route's address), a private address: only machines in its network can join; if this host has a public address (a cloud VM behind 1:1 NAT), restart with --public-url https://PUBLIC-ADDRESS:%s",
			host, port)
	}
	return ""
}

var cgnat = netip.MustParsePrefix("100.64.0.0/10")

// externalSTUN returns the host:port of the first stun: URL among urls
// that is not ours (a STUN server outside, which sees the host's public
// address), or "".
func externalSTUN(urls, ours []string) string {
	for _, u := range urls {
		if !strings.HasPrefix(u, "stun:") || slices.Contains(ours, u) {
			continue
		}
		hp, _, _ := strings.Cut(strings.TrimPrefix(u, "stun:"), "?")
		if _, _, err := net.SplitHostPort(hp); err != nil {
			hp = net.JoinHostPort(hp, "3478")
		}
		return hp
	}
	return ""
}

// stunAddress asks the STUN server at hostport which address this host's
// UDP packets come from.
func stunAddress(ctx context.Context, hostport string) (netip.Addr, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "udp4", hostport)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("all: stun %s: %w", hostport, err)
	}
	defer c.Close()
	req := stun.MustBuild(stun.TransactionID, stun.BindingRequest)
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(3 * time.Second)
	}
	buf := make([]byte, 1500)
	for try := 0; try < 3 && time.Now().Before(deadline); try++ {
		if _, err := c.Write(req.Raw); err != nil {
			return netip.Addr{}, fmt.Errorf("all: stun %s: %w", hostport, err)
		}
		rd := time.Now().Add(time.Second)
		if deadline.Before(rd) {
			rd = deadline
		}
		_ = c.SetReadDeadline(rd)
		n, err := c.Read(buf)
		if err != nil {
			continue
		}
		res := &stun.Message{Raw: buf[:n]}
		if res.Decode() != nil || res.TransactionID != req.TransactionID {
			continue
		}
		var xor stun.XORMappedAddress
		if err := xor.GetFrom(res); err != nil {
			return netip.Addr{}, fmt.Errorf("all: stun %s: %w", hostport, err)
		}
		if ip, ok := netip.AddrFromSlice(xor.IP); ok {
			return ip.Unmap(), nil
		}
	}
	return netip.Addr{}, fmt.Errorf("all: stun %s: %w", hostport, errors.New("no answer"))
}

// checkPublicURL warns when the join line's address is likely not the one
// machines outside reach (see publicURLWarning). What this host looks like
// from outside: --relay-ip when given, else the answer of a STUN server
// among the extra --relay-url entries, if there is one.
func checkPublicURL(ctx context.Context, log *zap.Logger, p plan, relayIP netip.Addr, relayIPGiven bool, extraURLs, ours []string) {
	if p.explicit {
		return
	}
	var seen netip.Addr
	if relayIPGiven {
		seen = relayIP
	} else if hp := externalSTUN(extraURLs, ours); hp != "" {
		sctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		ip, err := stunAddress(sctx, hp)
		cancel()
		if err != nil {
			log.Info("could not check the public address with STUN", zap.Error(err))
		}
		seen = ip
	}
	if w := publicURLWarning(p.publicURL.Hostname(), seen, p.publicURL.Port()); w != "" {
		log.Warn(w)
	}
}
