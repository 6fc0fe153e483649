package wg

import (
	"errors"
	"net/netip"
	"slices"
)

// routeTable adds and removes routes through the interface. Add returns
// errRouteExists for a prefix that is routed already and that the device
// must therefore leave alone.
type routeTable interface {
	Add(netip.Prefix) error
	Del(netip.Prefix) error
}

var errRouteExists = errors.New("route exists")

// routeSet keeps the routes of a device's peers: one route per allowed-IP
// prefix outside the overlay network (the overlay itself is routed by the
// interface address), reference counted because two peers may list the
// same prefix. A nil *routeSet does nothing (netstack). Not safe for
// concurrent use: the device's lock guards it.
type routeSet struct {
	table   routeTable
	overlay netip.Prefix
	rc      map[netip.Prefix]int
	skipped map[netip.Prefix]bool // routed already (errRouteExists)
}

func newRouteSet(t routeTable, overlay netip.Prefix) *routeSet {
	return &routeSet{table: t, overlay: overlay.Masked(), rc: make(map[netip.Prefix]int), skipped: make(map[netip.Prefix]bool)}
}

// info describes the routes (a nil set: none in the kernel).
func (s *routeSet) info() RouteInfo {
	if s == nil {
		return RouteInfo{}
	}
	ri := RouteInfo{Kernel: true}
	if t, ok := s.table.(interface{ info() RouteInfo }); ok {
		ri = t.info()
		ri.Kernel = true
	}
	for p := range s.skipped {
		ri.Skipped = append(ri.Skipped, p)
	}
	slices.SortFunc(ri.Skipped, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
	return ri
}

// sync moves the routes from the prefixes in old to those in cur.
func (s *routeSet) sync(old, cur []netip.Prefix) error {
	if s == nil {
		return nil
	}
	var errs []error
	for _, p := range cur {
		p = p.Masked()
		if s.inOverlay(p) || slices.ContainsFunc(old, func(o netip.Prefix) bool { return o.Masked() == p }) {
			continue
		}
		if s.rc[p] == 0 {
			if err := s.table.Add(p); errors.Is(err, errRouteExists) {
				s.skipped[p] = true
				continue // not ours: never removed either
			} else if err != nil {
				errs = append(errs, err)
				continue
			}
		}
		s.rc[p]++
	}
	for _, p := range old {
		p = p.Masked()
		if s.inOverlay(p) || slices.ContainsFunc(cur, func(c netip.Prefix) bool { return c.Masked() == p }) {
			continue
		}
		delete(s.skipped, p)
		s.drop(p, &errs)
	}
	return errors.Join(errs...)
}

func (s *routeSet) drop(p netip.Prefix, errs *[]error) {
	switch s.rc[p] {
	case 0:
		return
	case 1:
		delete(s.rc, p)
		if err := s.table.Del(p); err != nil {
			*errs = append(*errs, err)
		}
	default:
		s.rc[p]--
	}
}

// clear removes every route the set added.
func (s *routeSet) clear() error {
	if s == nil {
		return nil
	}
	var errs []error
	for p := range s.rc {
		s.rc[p] = 1
		s.drop(p, &errs)
	}
	clear(s.skipped)
	if t, ok := s.table.(interface{ release() }); ok {
		t.release()
	}
	return errors.Join(errs...)
}

func (s *routeSet) inOverlay(p netip.Prefix) bool {
	return s.overlay.IsValid() && p.Bits() >= s.overlay.Bits() && s.overlay.Contains(p.Addr())
}
