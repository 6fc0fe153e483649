package netmap

import (
	"runtime"
	"sync"

	"google.golang.org/protobuf/types/known/timestamppb"

	controlv1 "meshd/api/control/v1"
)

// rules collects a peer's firewall rules: in and out are the two parts of one
// array, in first.
type rules struct {
	all     []*controlv1.FirewallRule
	in, out []*controlv1.FirewallRule
}

// reach marks in sc.peers every peer a policy connects peer i with, and
// collects i's firewall rules when r is not nil (sized exactly, so a map is
// allocated once). Cost: the number of policies naming i's groups plus the
// members of their other sides.
func (ix *Index) reach(i int32, sc *scratch, r *rules) {
	e := &ix.peers[i]
	for _, g := range e.groups {
		for _, pi := range ix.groupPolicies[g] {
			sc.policies.set(pi)
		}
	}
	sc.pols = sc.pols[:0]
	sc.policies.drain(func(pi int32) { sc.pols = append(sc.pols, pi) })
	// Which side of each policy i is on, and how many rules that makes.
	type side struct{ src, dst, both bool }
	sides := sc.sides[:0]
	nin, nout := 0, 0
	for _, pi := range sc.pols {
		p := &ix.policies[pi]
		inSrc, inDst := p.srcGroups.intersects(e.groups), p.dstGroups.intersects(e.groups)
		s := side{src: inSrc, dst: inDst}
		if inSrc && inDst && p.bidirectional {
			s = side{both: true}
			nin, nout = nin+len(p.both), nout+len(p.both)
		} else {
			if inSrc {
				nout += len(p.dst)
				if p.bidirectional {
					nin += len(p.dst)
				}
			}
			if inDst {
				nin += len(p.src)
				if p.bidirectional {
					nout += len(p.src)
				}
			}
		}
		sides = append(sides, s)
	}
	sc.sides = sides
	if r != nil && nin+nout > 0 {
		r.all = make([]*controlv1.FirewallRule, nin+nout)
		r.in, r.out = r.all[:0:nin], r.all[nin:nin:nin+nout]
	}
	add := func(peers []int32, in, out []*controlv1.FirewallRule) {
		for j, q := range peers {
			if q == i {
				continue
			}
			sc.peers.set(q)
			if r != nil {
				if in != nil {
					r.in = append(r.in, in[j])
				}
				if out != nil {
					r.out = append(r.out, out[j])
				}
			}
		}
	}
	for k, pi := range sc.pols {
		p, s := &ix.policies[pi], sides[k]
		switch {
		case s.both:
			add(p.both, p.bothIn, p.bothOut)
		default:
			if s.src {
				add(p.dst, p.dstIn, p.dstOut) // dstIn is nil unless bidirectional
			}
			if s.dst {
				add(p.src, p.srcIn, p.srcOut) // srcOut is nil unless bidirectional
			}
		}
	}
}

// Entry returns the entry of peer id as the map of peer self lists it, and
// whether that map lists it at all (when not, rp still carries id's key).
// ok is false when the entry cannot be given without computing self's whole
// map: self or id is unknown, or id routes a network (its entry may then
// carry the networks it routes for self). Cost: the policies of self's
// groups, not the size of self's map. Like Map's, the entry is shared: do
// not modify it.
func (ix *Index) Entry(self, id string) (rp *controlv1.RemotePeer, listed, ok bool) {
	i, ok1 := ix.byID[self]
	j, ok2 := ix.byID[id]
	if !ok1 || !ok2 || ix.routers.has(j) {
		return nil, false, false
	}
	return ix.peers[j].remote, i != j && ix.connected(i, j), true
}

// connected reports whether a policy connects peers i and j (i != j): as
// reach does, whatever the direction.
func (ix *Index) connected(i, j int32) bool {
	gi, gj := ix.peers[i].groups, ix.peers[j].groups
	for _, g := range gi {
		for _, pi := range ix.groupPolicies[g] {
			p := &ix.policies[pi]
			if (p.srcGroups.intersects(gi) && p.dstGroups.intersects(gj)) ||
				(p.dstGroups.intersects(gi) && p.srcGroups.intersects(gj)) {
				return true
			}
		}
	}
	return false
}

// Map returns the network map of peer id, or nil when the index does not
// know it. Serial, relays and the signal address are left for the caller.
func (ix *Index) Map(id string) *controlv1.NetworkMap {
	i, ok := ix.byID[id]
	if !ok {
		return nil
	}
	sc := ix.scratch.Get().(*scratch)
	defer ix.scratch.Put(sc)
	return ix.compute(i, sc)
}

func (ix *Index) compute(i int32, sc *scratch) *controlv1.NetworkMap {
	e := &ix.peers[i]
	var r rules
	ix.reach(i, sc, &r)
	m := &controlv1.NetworkMap{Self: ix.self(e), PostQuantum: ix.settings.PostQuantum}
	if n := len(r.in) + len(r.out); n > 0 {
		// in and out share one array (see reach): close the gap self left.
		copy(r.all[len(r.in):], r.out)
		m.FirewallRules = r.all[:n:n]
	}
	// Routes need to know which peers are reachable, so they come before
	// the peer set is drained.
	var via map[int32]*controlv1.RemotePeer
	m.Routes, via = ix.routes(i, sc)
	m.Peers = make([]*controlv1.RemotePeer, 0, sc.peers.count())
	sc.peers.drain(func(q int32) {
		if v, ok := via[q]; ok {
			m.Peers = append(m.Peers, v)
			return
		}
		m.Peers = append(m.Peers, ix.peers[q].remote)
	})
	m.Dns = ix.dns(e)
	return m
}

func (ix *Index) self(e *peerEntry) *controlv1.SelfConfig {
	s := &controlv1.SelfConfig{
		PeerId:         e.p.ID,
		Name:           e.p.Name,
		DnsName:        e.remote.DnsName,
		OverlayIp:      e.remote.OverlayIp,
		OverlayNetwork: ix.settings.Network.String(),
		PublicKey:      e.p.Key,
		Mtu:            ix.mtu,
	}
	if !e.p.LoginExpires.IsZero() {
		s.LoginExpires = timestamppb.New(e.p.LoginExpires)
	}
	return s
}

// routes returns the routes of peer i, and copies of the remote peers whose
// allowed IPs grow by the networks they route for i. Per network, a peer that
// routes it gets its own routes (peer_public_key = its key); any other peer
// receiving it gets one route through the best routing peer a policy
// connects it with: an online peer before an offline one, then the lowest
// metric, then the order of preference.
func (ix *Index) routes(i int32, sc *scratch) ([]*controlv1.Route, map[int32]*controlv1.RemotePeer) {
	if len(ix.networks) == 0 {
		return nil, nil
	}
	e := &ix.peers[i]
	var out []*controlv1.Route
	var via map[int32]*controlv1.RemotePeer
	for _, n := range ix.networks {
		routing := false
		for _, re := range n.routes {
			for _, q := range re.peers {
				if q == i {
					routing = true
					out = append(out, routeMsg(re.r, e.p.Key))
				}
			}
		}
		if routing {
			continue
		}
		best, bestPeer, bestOnline := (*routeEntry)(nil), int32(-1), false
		for k := range n.routes {
			re := &n.routes[k]
			if re.groups != nil && !re.groups.intersects(e.groups) {
				continue
			}
			for _, q := range re.peers {
				if !sc.peers.has(q) {
					continue // no policy connects i with this routing peer
				}
				online := ix.peers[q].p.Online
				if best == nil || (online && !bestOnline) {
					best, bestPeer, bestOnline = re, q, online
				}
			}
		}
		if best == nil {
			continue
		}
		out = append(out, routeMsg(best.r, ix.peers[bestPeer].p.Key))
		if via == nil {
			via = map[int32]*controlv1.RemotePeer{}
		}
		rp, ok := via[bestPeer]
		if !ok {
			orig := ix.peers[bestPeer].remote
			rp = &controlv1.RemotePeer{PublicKey: orig.PublicKey, Name: orig.Name, DnsName: orig.DnsName,
				OverlayIp: orig.OverlayIp, Online: orig.Online, LastSeen: orig.LastSeen, PostQuantum: orig.PostQuantum,
				AllowedIps: append([]string(nil), orig.AllowedIps...)}
			via[bestPeer] = rp
		}
		rp.AllowedIps = append(rp.AllowedIps, best.r.Network.Masked().String())
	}
	return out, via
}

func routeMsg(r *Route, key string) *controlv1.Route {
	return &controlv1.Route{Id: r.ID, Network: r.Network.Masked().String(), PeerPublicKey: key,
		Metric: r.Metric, Masquerade: r.Masquerade, Description: r.Description}
}

func (ix *Index) dns(e *peerEntry) *controlv1.DNSConfig {
	d := &controlv1.DNSConfig{Domain: ix.settings.Domain, Records: ix.records}
	for _, n := range ix.ns {
		if n.groups == nil || n.groups.intersects(e.groups) {
			d.NameserverGroups = append(d.NameserverGroups, n.msg)
		}
	}
	return d
}

// ForEach computes the map of every peer on workers goroutines (zero: one
// per CPU) and calls fn with each; fn is called concurrently and must not
// keep maps it does not need, so memory stays bounded by what fn keeps.
func (ix *Index) ForEach(workers int, fn func(peerID string, m *controlv1.NetworkMap)) {
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	var wg sync.WaitGroup
	n := len(ix.peers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sc := ix.scratch.Get().(*scratch)
			defer ix.scratch.Put(sc)
			for i := w; i < n; i += workers {
				fn(ix.peers[i].p.ID, ix.compute(int32(i), sc))
			}
		}()
	}
	wg.Wait()
}
