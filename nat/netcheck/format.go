package netcheck

import (
	"fmt"
	"io"
	"strings"
)

// WriteText prints the report for people, one finding a line.
func (r *Report) WriteText(w io.Writer) error {
	var b strings.Builder
	yes := func(v bool) string {
		if v {
			return "yes"
		}
		return "no"
	}
	fmt.Fprintf(&b, "Report:\n")
	fmt.Fprintf(&b, "  * UDP: %s\n", yes(r.UDP))
	v4 := yes(r.IPv4)
	if r.IPv4 {
		v4 += ", " + r.GlobalV4
	}
	fmt.Fprintf(&b, "  * IPv4: %s\n", v4)
	v6 := yes(r.IPv6)
	if r.IPv6 {
		v6 += ", " + r.GlobalV6
	} else if r.IPv6Note != "" {
		v6 += " (" + r.IPv6Note + ")"
	}
	fmt.Fprintf(&b, "  * IPv6: %s\n", v6)
	switch {
	case r.MappingVariesByDest == nil:
		fmt.Fprintf(&b, "  * Mapping varies by destination: %s\n", r.MappingNote)
	case *r.MappingVariesByDest:
		fmt.Fprintf(&b, "  * Mapping varies by destination: yes (symmetric NAT: direct paths need the other side to be easy)\n")
	default:
		fmt.Fprintf(&b, "  * Mapping varies by destination: no\n")
	}
	pm := r.PortMapping
	var found []string
	for _, p := range []struct {
		name string
		on   bool
	}{{"UPnP", pm.UPnP}, {"NAT-PMP", pm.NATPMP}, {"PCP", pm.PCP}} {
		if p.on {
			found = append(found, p.name)
		}
	}
	switch {
	case pm.Error != "":
		fmt.Fprintf(&b, "  * Port mapping: unknown (%s)\n", pm.Error)
	case len(found) == 0:
		fmt.Fprintf(&b, "  * Port mapping: none found on gateway %s\n", pm.Gateway)
	default:
		fmt.Fprintf(&b, "  * Port mapping: %s on gateway %s\n", strings.Join(found, ", "), pm.Gateway)
	}
	if r.NearestRelay != "" {
		fmt.Fprintf(&b, "  * Nearest relay: %s\n", r.NearestRelay)
	}
	fmt.Fprintf(&b, "  * Relay latency:\n")
	for _, p := range r.Relays {
		if p.Mapped == "" {
			fmt.Fprintf(&b, "      - %s (%s): %s\n", p.URL, p.Address, p.Error)
			continue
		}
		fmt.Fprintf(&b, "      - %s (%s): %.2fms, sees %s\n", p.URL, p.Address, p.LatencyMs, p.Mapped)
	}
	_, err := io.WriteString(w, b.String())
	return err
}
