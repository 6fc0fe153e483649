package wg

import (
	"net/netip"
	"strings"
	"testing"
)

// fakeTable records route changes as `ip route` lines.
type fakeTable struct {
	log    []string
	exists map[netip.Prefix]bool // routed by someone else
}

func (f *fakeTable) Add(p netip.Prefix) error {
	if f.exists[p] {
		return errRouteExists
	}
	f.log = append(f.log, "add "+p.String())
	return nil
}

func (f *fakeTable) Del(p netip.Prefix) error {
	f.log = append(f.log, "del "+p.String())
	return nil
}

func pfx(ss ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range ss {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}

func TestRouteSet(t *testing.T) {
	ft := &fakeTable{exists: map[netip.Prefix]bool{netip.MustParsePrefix("192.168.1.0/24"): true}}
	s := newRouteSet(ft, netip.MustParsePrefix("100.64.0.7/16"))
	steps := []error{
		// peer 1: its overlay IP needs no route, its subnet does
		s.sync(nil, pfx("100.64.0.2/32", "10.1.0.0/24")),
		// peer 2 routes the same subnet and one that is routed already
		s.sync(nil, pfx("100.64.0.3/32", "10.1.0.0/24", "192.168.1.0/24")),
		// peer 1 swaps its subnet
		s.sync(pfx("100.64.0.2/32", "10.1.0.0/24"), pfx("100.64.0.2/32", "10.2.0.0/24")),
		// peer 2 goes away: 10.1.0.0/24 is nobody's now; 192.168.1.0/24 was never ours
		s.sync(pfx("100.64.0.3/32", "10.1.0.0/24", "192.168.1.0/24"), nil),
		s.clear(),
	}
	for i, err := range steps {
		if err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
	}
	want := `add 10.1.0.0/24
add 10.2.0.0/24
del 10.1.0.0/24
del 10.2.0.0/24`
	if got := strings.Join(ft.log, "\n"); got != want {
		t.Fatalf("route changes:\n%s\nwant:\n%s", got, want)
	}
	var nilSet *routeSet
	if nilSet.sync(nil, pfx("10.0.0.0/8")) != nil || nilSet.clear() != nil {
		t.Fatal("nil routeSet must do nothing")
	}
}

// TestRouteSetInfo: status learns which prefixes the machine routes
// itself (left alone), until no peer lists them any more.
func TestRouteSetInfo(t *testing.T) {
	if ri := (*routeSet)(nil).info(); ri.Kernel {
		t.Fatalf("netstack (no route set) reports kernel routes: %+v", ri)
	}
	ft := &fakeTable{exists: map[netip.Prefix]bool{netip.MustParsePrefix("192.168.1.0/24"): true}}
	s := newRouteSet(ft, netip.MustParsePrefix("100.64.0.7/16"))
	if err := s.sync(nil, pfx("100.64.0.2/32", "10.1.0.0/24", "192.168.1.0/24")); err != nil {
		t.Fatal(err)
	}
	ri := s.info()
	if !ri.Kernel || ri.Bypass || len(ri.Skipped) != 1 || ri.Skipped[0] != netip.MustParsePrefix("192.168.1.0/24") {
		t.Fatalf("info %+v: want kernel routes, no bypass (a table without policy), 192.168.1.0/24 skipped", ri)
	}
	if err := s.sync(pfx("100.64.0.2/32", "10.1.0.0/24", "192.168.1.0/24"), pfx("100.64.0.2/32")); err != nil {
		t.Fatal(err)
	}
	if ri := s.info(); len(ri.Skipped) != 0 {
		t.Fatalf("skipped after the prefix went: %v", ri.Skipped)
	}
}
