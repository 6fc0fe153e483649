// Package netcheck measures what this machine's network allows a mesh peer:
// whether UDP leaves it, the public address STUN servers see per family,
// whether the NAT maps per destination (which rules out most direct paths),
// which port mapping protocols the gateway answers, and the latency to each
// relay. It exists so that "why is my peer relayed?" has an answer without
// a running agent (`meshd netcheck`). It only measures: it maps no ports and
// changes nothing. Only roles/agent imports it.
package netcheck

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pion/stun/v2"
	"go.uber.org/zap"
)

// Defaults of Options.
const (
	DefaultTimeout  = 3 * time.Second
	PortMapPort     = 5351 // NAT-PMP and PCP on the gateway
	DefaultSSDPAddr = "239.255.255.250:1900"
	// samples is how many STUN answers per server the latency is the
	// minimum of.
	samples = 3
)

// Options say what to probe.
type Options struct {
	// STUN servers: stun:host:port or turn:host:port URLs (a TURN server
	// over UDP answers binding requests), or host:port.
	STUN []string
	// Gateway is where NAT-PMP, PCP and unicast SSDP are asked; zero: the
	// IPv4 default route's gateway.
	Gateway netip.Addr
	// PortMapPort is the NAT-PMP/PCP port (0: PortMapPort).
	PortMapPort int
	// SSDPAddr is the multicast UPnP discovery address ("":
	// DefaultSSDPAddr; "-": do not send multicast).
	SSDPAddr string
	// Timeout bounds the whole check (0: DefaultTimeout).
	Timeout time.Duration
	Log     *zap.Logger
}

// Report is what `meshd netcheck --json` prints. Field names are stable.
type Report struct {
	// UDP: some STUN server answered over UDP.
	UDP bool `json:"udp"`
	// IPv4 and IPv6: a STUN server of that family answered; GlobalV4/V6
	// is the address (ip:port) it saw.
	IPv4     bool   `json:"ipv4"`
	GlobalV4 string `json:"global_v4,omitempty"`
	IPv6     bool   `json:"ipv6"`
	GlobalV6 string `json:"global_v6,omitempty"`
	// IPv6Note says why IPv6 is false (e.g. no relay has an IPv6 address).
	IPv6Note string `json:"ipv6_note,omitempty"`
	// MappingVariesByDest: two STUN servers saw different IPv4 addresses
	// of the same socket, an endpoint-dependent ("symmetric") NAT; null
	// when it cannot be told (MappingNote says why).
	MappingVariesByDest *bool       `json:"mapping_varies_by_dest"`
	MappingNote         string      `json:"mapping_note,omitempty"`
	PortMapping         PortMapping `json:"port_mapping"`
	// Relays: one probe per STUN server address, in the order given.
	Relays []Probe `json:"relays"`
	// NearestRelay is the URL with the lowest latency ("" when none
	// answered).
	NearestRelay string `json:"nearest_relay,omitempty"`
}

// PortMapping is which port mapping protocols the gateway answered.
type PortMapping struct {
	Gateway string `json:"gateway,omitempty"`
	UPnP    bool   `json:"upnp"`
	NATPMP  bool   `json:"nat_pmp"`
	PCP     bool   `json:"pcp"`
	// Error: why the gateway could not be asked.
	Error string `json:"error,omitempty"`
}

// Probe is one STUN server address.
type Probe struct {
	URL     string `json:"url"`
	Address string `json:"address"` // ip:port asked
	Family  string `json:"family"`  // "ipv4" or "ipv6"
	// Mapped is the address the server saw (ip:port); empty without answer.
	Mapped    string  `json:"mapped,omitempty"`
	LatencyMs float64 `json:"latency_ms,omitempty"`
	Error     string  `json:"error,omitempty"`
}

// ErrNoServers means there is nothing to measure against.
var ErrNoServers = errors.New("netcheck: no STUN server to ask; pass --relay-url stun:HOST:PORT or run it next to a running agent")

// Run measures. It fails only when no server can even be resolved; what a
// probe could not find is in the report.
func Run(ctx context.Context, o Options) (*Report, error) {
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.Log == nil {
		o.Log = zap.NewNop()
	}
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	probes, err := resolve(ctx, o.STUN)
	if err != nil {
		return nil, err
	}
	r := &Report{Relays: probes}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		r.PortMapping = probePortMapping(ctx, o)
	}()
	stunAll(ctx, probes, o.Log)
	wg.Wait()
	r.summarize()
	return r, nil
}

// resolve turns URLs into one probe per address.
func resolve(ctx context.Context, urls []string) ([]Probe, error) {
	var out []Probe
	var errs []error
	seen := map[string]bool{}
	for _, raw := range urls {
		host, port, err := hostPort(raw)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		addrs, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
		if err != nil {
			out = append(out, Probe{URL: raw, Address: net.JoinHostPort(host, strconv.Itoa(port)), Error: err.Error()})
			continue
		}
		for _, a := range addrs {
			ap := netip.AddrPortFrom(a.Unmap(), uint16(port))
			if seen[ap.String()] {
				continue
			}
			seen[ap.String()] = true
			fam := "ipv4"
			if ap.Addr().Is6() {
				fam = "ipv6"
			}
			out = append(out, Probe{URL: raw, Address: ap.String(), Family: fam})
		}
	}
	if len(out) == 0 {
		if len(errs) > 0 {
			return nil, errors.Join(errs...)
		}
		return nil, ErrNoServers
	}
	return out, nil
}

// hostPort reads stun:/turn: URLs (the port defaults to 3478) and host:port.
func hostPort(raw string) (string, int, error) {
	if strings.HasPrefix(raw, "stun:") || strings.HasPrefix(raw, "turn:") {
		u, err := stun.ParseURI(raw)
		if err != nil {
			return "", 0, fmt.Errorf("netcheck: relay url %q: %w", raw, err)
		}
		if u.Proto != stun.ProtoTypeUDP {
			return "", 0, fmt.Errorf("netcheck: relay url %q is not over UDP; STUN needs UDP", raw)
		}
		return u.Host, u.Port, nil
	}
	host, ps, err := net.SplitHostPort(raw)
	if err != nil {
		return "", 0, fmt.Errorf("netcheck: relay %q: want stun:HOST:PORT or HOST:PORT: %w", raw, err)
	}
	port, err := strconv.Atoi(ps)
	if err != nil || port <= 0 || port > 65535 {
		return "", 0, fmt.Errorf("netcheck: relay %q: bad port", raw)
	}
	return host, port, nil
}

// summarize fills the derived fields from the probes.
func (r *Report) summarize() {
	var v4 []Probe
	anyV6 := false
	best := -1.0
	for _, p := range r.Relays {
		if p.Family == "ipv6" {
			anyV6 = true
		}
		if p.Mapped == "" {
			continue
		}
		r.UDP = true
		switch p.Family {
		case "ipv4":
			v4 = append(v4, p)
			if !r.IPv4 {
				r.IPv4, r.GlobalV4 = true, p.Mapped
			}
		case "ipv6":
			if !r.IPv6 {
				r.IPv6, r.GlobalV6 = true, p.Mapped
			}
		}
		if best < 0 || p.LatencyMs < best {
			best, r.NearestRelay = p.LatencyMs, p.URL
		}
	}
	switch {
	case r.IPv6:
	case !anyV6:
		r.IPv6Note = "no relay has an IPv6 address"
	default:
		r.IPv6Note = "no IPv6 STUN server answered"
	}
	switch {
	case len(v4) >= 2:
		varies := false
		for _, p := range v4[1:] {
			if p.Mapped != v4[0].Mapped {
				varies = true
			}
		}
		r.MappingVariesByDest = &varies
	case len(v4) == 1:
		r.MappingNote = "unknown (one STUN server)"
	default:
		r.MappingNote = "unknown (no STUN answer over IPv4)"
	}
}
