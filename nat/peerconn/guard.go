package peerconn

import (
	"errors"
	"net"
	"net/netip"
	"slices"
	"sync/atomic"
)

// Guard holds the addresses that lead into the mesh itself: the overlay
// network, and any network the mesh routes that this agent's own sockets
// would follow into the tunnel. A path to such an address would carry
// WireGuard inside WireGuard: packets to the peer go into the tunnel to
// the same peer, which loops until the path fails, burning bandwidth and
// CPU on both sides. So a guarded address is never a candidate, local or
// remote, of any type; STUN from a guarded source never reaches pion (no
// peer-reflexive candidate is learned from it); nothing is written to a
// guarded destination; and a selected pair on a guarded address is
// reported as failed.
//
// The agent sets the prefixes from every network map; sessions and the
// mux read them at each use, so a new route takes effect at once. A nil
// *Guard guards nothing. Safe for concurrent use.
type Guard struct {
	ps atomic.Pointer[[]netip.Prefix]
}

// ErrGuarded is returned for a write to an address that leads into the mesh.
var ErrGuarded = errors.New("peerconn: address leads into the mesh (a path there would loop through the tunnel)")

// NewGuard returns a guard over ps.
func NewGuard(ps ...netip.Prefix) *Guard {
	g := &Guard{}
	g.Set(ps)
	return g
}

// Set replaces the guarded prefixes.
func (g *Guard) Set(ps []netip.Prefix) {
	cp := make([]netip.Prefix, 0, len(ps))
	for _, p := range ps {
		if p.IsValid() {
			cp = append(cp, p.Masked())
		}
	}
	g.ps.Store(&cp)
}

// Prefixes returns the guarded prefixes.
func (g *Guard) Prefixes() []netip.Prefix {
	if g == nil {
		return nil
	}
	if p := g.ps.Load(); p != nil {
		return slices.Clone(*p)
	}
	return nil
}

// Contains reports whether a is guarded.
func (g *Guard) Contains(a netip.Addr) bool {
	if g == nil {
		return false
	}
	p := g.ps.Load()
	if p == nil {
		return false
	}
	a = a.Unmap()
	for _, q := range *p {
		if q.Contains(a) {
			return true
		}
	}
	return false
}

// containsNet is Contains for a net.Addr (UDP or TCP); other kinds are
// not guarded.
func (g *Guard) containsNet(a net.Addr) bool {
	if g == nil || a == nil {
		return false
	}
	switch v := a.(type) {
	case *net.UDPAddr:
		ip, ok := netip.AddrFromSlice(v.IP)
		return ok && g.Contains(ip)
	case *net.TCPAddr:
		ip, ok := netip.AddrFromSlice(v.IP)
		return ok && g.Contains(ip)
	}
	if ap, err := netip.ParseAddrPort(a.String()); err == nil {
		return g.Contains(ap.Addr())
	}
	return false
}

// containsHost is Contains for a candidate's address (ip:port or ip).
func (g *Guard) containsHost(addr string) bool {
	if g == nil {
		return false
	}
	if ap, err := netip.ParseAddrPort(addr); err == nil {
		return g.Contains(ap.Addr())
	}
	if a, err := netip.ParseAddr(addr); err == nil {
		return g.Contains(a)
	}
	return false
}
