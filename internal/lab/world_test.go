//go:build linux

package lab

import (
	"fmt"
	"strings"
)

// member is one host of the world both the plain-UDP tests and the meshd
// matrix use.
type member struct {
	name string
	nat  Kind // "" for a public host
	host *Host
}

func (m member) label() string {
	if m.nat == "" {
		return "public"
	}
	return string(m.nat)
}

// buildWorld makes one host of every kind, two of the kinds that pair with
// themselves, and two hosts behind one home router:
//
//	pub            on the internet
//	home1, home2   behind home routers
//	bare1, bare2   behind bare masquerade routers
//	sym1, sym2     behind symmetric routers
//	udp            behind a router that drops UDP
//	lan1, lan2     behind one home router (the same LAN)
func buildWorld(l *Lab) []member {
	ms := []member{{name: "pub", host: l.Host("pub", nil)}}
	for _, k := range []struct {
		name string
		kind Kind
	}{
		{"home1", Home}, {"home2", Home},
		{"bare1", Bare}, {"bare2", Bare},
		{"sym1", Symmetric}, {"sym2", Symmetric},
		{"udp", UDPBlocked},
	} {
		r := l.Router("r"+k.name, k.kind)
		ms = append(ms, member{name: k.name, nat: k.kind, host: l.Host(k.name, r)})
	}
	rlan := l.Router("rlan", Home)
	ms = append(ms,
		member{name: "lan1", nat: Home, host: l.Host("lan1", rlan)},
		member{name: "lan2", nat: Home, host: l.Host("lan2", rlan)},
	)
	return ms
}

// expect is what a pair of hosts should get.
type expect string

const (
	expectDirect  expect = "direct"
	expectRelayed expect = "relayed"
	expectRecord  expect = "record" // no claim: the test writes down what happens
)

// expectation is the design's claim for a pair: direct where hole
// punching can work (public with anything that has UDP, home with home,
// the same LAN), relayed for symmetric with symmetric and anything with the
// UDP-blocked host; no claim for the rest.
func expectation(a, b member) expect {
	switch {
	case a.nat == UDPBlocked || b.nat == UDPBlocked:
		return expectRelayed
	case a.host.Router() != nil && a.host.Router() == b.host.Router():
		return expectDirect
	case a.nat == "" || b.nat == "":
		return expectDirect
	case a.nat == Home && b.nat == Home:
		return expectDirect
	case a.nat == Symmetric && b.nat == Symmetric:
		return expectRelayed
	}
	return expectRecord
}

// pairs lists every unordered pair of members.
func pairs(ms []member) [][2]member {
	var ps [][2]member
	for i := range ms {
		for j := i + 1; j < len(ms); j++ {
			ps = append(ps, [2]member{ms[i], ms[j]})
		}
	}
	return ps
}

// table formats rows as aligned columns.
func table(header []string, rows [][]string) string {
	w := make([]int, len(header))
	for _, r := range append([][]string{header}, rows...) {
		for i, c := range r {
			w[i] = max(w[i], len(c))
		}
	}
	var b strings.Builder
	line := func(r []string) {
		for i, c := range r {
			fmt.Fprintf(&b, "%-*s  ", w[i], c)
		}
		b.WriteString("\n")
	}
	line(header)
	sep := make([]string, len(header))
	for i := range sep {
		sep[i] = strings.Repeat("-", w[i])
	}
	line(sep)
	for _, r := range rows {
		line(r)
	}
	return b.String()
}

// grid formats a symmetric result as a matrix of names.
func grid(ms []member, cell func(a, b member) string) string {
	header := []string{""}
	for _, m := range ms {
		header = append(header, m.name)
	}
	var rows [][]string
	for _, a := range ms {
		r := []string{a.name + " (" + a.label() + ")"}
		for _, b := range ms {
			if a.name == b.name {
				r = append(r, "·")
				continue
			}
			r = append(r, cell(a, b))
		}
		rows = append(rows, r)
	}
	return table(header, rows)
}
