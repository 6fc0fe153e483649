// Package filter enforces the firewall rules of a network map on the packets
// an agent's tunnel carries (design step 5: the receiving peer enforces the
// rules). It is a small stateful packet filter: a packet coming out of the
// tunnel from peer X is accepted when an IN rule for X matches it or when it
// answers a flow this machine opened; a packet going into the tunnel to X is
// accepted when an OUT rule for X matches it or when it answers a flow X
// opened. A map without rules accepts everything (an agent that has no
// policy information does not cut tunnels); a map with rules drops what no
// rule accepts.
//
// The WireGuard data plane (wg/) calls Allow for every packet: on the TUN
// write path (packets WireGuard decrypted, inbound=true) and on the TUN read
// path (packets the system sends into the tunnel, inbound=false). Allow does
// not allocate except when it records a new flow. The agent engine compiles a
// Filter from each map and swaps it in with SetRules; flows survive the
// swap. Kernel WireGuard's packets never pass through the process: there
// internal/filter/nftfilter renders the same compiled Rules (Rules.Specs)
// as nftables rules on the interface.
package filter

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	controlv1 "meshd/api/control/v1"
)

// IP protocol numbers.
const (
	protoICMP   = 1
	protoTCP    = 6
	protoUDP    = 17
	protoICMPv6 = 58
)

// Flow timeouts: how long a flow is remembered after its last packet.
const (
	TCPTimeout   = time.Hour
	UDPTimeout   = 2 * time.Minute
	OtherTimeout = 30 * time.Second
	// MaxFlows bounds the flow table; when full, expired flows are swept and,
	// if none expired, new flows are not recorded (their replies are then
	// judged by the rules alone).
	MaxFlows = 1 << 16
)

// rule is one compiled firewall rule.
type rule struct {
	proto uint8 // 0: any
	ports []portRange
}

type portRange struct{ lo, hi uint16 }

func (r *rule) match(proto uint8, dport uint16, hasPort bool) bool {
	if r.proto != 0 && r.proto != proto && !(r.proto == protoICMP && proto == protoICMPv6) {
		return false
	}
	if len(r.ports) == 0 {
		return true
	}
	if !hasPort {
		return false
	}
	for _, p := range r.ports {
		if dport >= p.lo && dport <= p.hi {
			return true
		}
	}
	return false
}

// rules are the compiled rules of one direction.
type rules struct {
	byAddr   map[netip.Addr][]rule
	prefixes []prefixRules
}

type prefixRules struct {
	p     netip.Prefix
	rules []rule
}

func (rs *rules) match(peer netip.Addr, proto uint8, dport uint16, hasPort bool) bool {
	for i := range rs.byAddr[peer] {
		if rs.byAddr[peer][i].match(proto, dport, hasPort) {
			return true
		}
	}
	for i := range rs.prefixes {
		if rs.prefixes[i].p.Contains(peer) {
			for j := range rs.prefixes[i].rules {
				if rs.prefixes[i].rules[j].match(proto, dport, hasPort) {
					return true
				}
			}
		}
	}
	return false
}

func (rs *rules) add(peer string, r rule) error {
	if a, err := netip.ParseAddr(peer); err == nil {
		a = a.Unmap()
		rs.byAddr[a] = append(rs.byAddr[a], r)
		return nil
	}
	p, err := netip.ParsePrefix(peer)
	if err != nil {
		return fmt.Errorf("peer ip %q: want an address or a prefix", peer)
	}
	p = p.Masked()
	for i := range rs.prefixes {
		if rs.prefixes[i].p == p {
			rs.prefixes[i].rules = append(rs.prefixes[i].rules, r)
			return nil
		}
	}
	rs.prefixes = append(rs.prefixes, prefixRules{p: p, rules: []rule{r}})
	return nil
}

// Rules is a compiled rule set. It is immutable; share it freely.
type Rules struct {
	allowAll bool
	in, out  rules
	n        int
}

// Compile compiles the firewall rules of a map. Rules it cannot read are
// skipped and reported in the error, which never stops the others from
// applying: a malformed rule cannot open anything, it can only fail to.
func Compile(frs []*controlv1.FirewallRule) (*Rules, error) {
	r := &Rules{
		allowAll: len(frs) == 0,
		in:       rules{byAddr: map[netip.Addr][]rule{}},
		out:      rules{byAddr: map[netip.Addr][]rule{}},
	}
	var firstErr error
	for i, fr := range frs {
		cr := rule{}
		switch fr.GetProtocol() {
		case controlv1.Protocol_PROTOCOL_ALL, controlv1.Protocol_PROTOCOL_UNSPECIFIED:
		case controlv1.Protocol_PROTOCOL_TCP:
			cr.proto = protoTCP
		case controlv1.Protocol_PROTOCOL_UDP:
			cr.proto = protoUDP
		case controlv1.Protocol_PROTOCOL_ICMP:
			cr.proto = protoICMP
		default:
			if firstErr == nil {
				firstErr = fmt.Errorf("filter: rule %d: unknown protocol %v", i, fr.GetProtocol())
			}
			continue
		}
		bad := false
		for _, p := range fr.GetPorts() {
			end := p.GetEnd()
			if end == 0 {
				end = p.GetStart()
			}
			if p.GetStart() > 65535 || end > 65535 || end < p.GetStart() {
				bad = true
				break
			}
			cr.ports = append(cr.ports, portRange{lo: uint16(p.GetStart()), hi: uint16(end)})
		}
		if bad {
			if firstErr == nil {
				firstErr = fmt.Errorf("filter: rule %d: bad port range", i)
			}
			continue
		}
		var dst *rules
		switch fr.GetDirection() {
		case controlv1.Direction_DIRECTION_IN:
			dst = &r.in
		case controlv1.Direction_DIRECTION_OUT:
			dst = &r.out
		default:
			if firstErr == nil {
				firstErr = fmt.Errorf("filter: rule %d: no direction", i)
			}
			continue
		}
		if err := dst.add(fr.GetPeerIp(), cr); err != nil {
			if firstErr == nil {
				firstErr = fmt.Errorf("filter: rule %d: %w", i, err)
			}
			continue
		}
		r.n++
	}
	return r, firstErr
}

// Len returns how many rules compiled.
func (r *Rules) Len() int { return r.n }

// flowKey names a flow as seen from the side that opened it.
type flowKey struct {
	proto      uint8
	src, dst   netip.Addr
	sport, dpt uint16
}

type flow struct {
	last    atomic.Int64 // unix nanoseconds of the last packet
	timeout time.Duration
	inbound bool // opened by the remote peer
}

// Filter is the rules plus the flow table. Safe for concurrent use.
type Filter struct {
	rules atomic.Pointer[Rules]
	now   func() time.Time

	mu    sync.RWMutex
	flows map[flowKey]*flow
}

// New returns a filter with rules r (nil: accept everything).
func New(r *Rules) *Filter {
	f := &Filter{now: time.Now, flows: make(map[flowKey]*flow)}
	if r == nil {
		r = &Rules{allowAll: true}
	}
	f.rules.Store(r)
	return f
}

// SetRules replaces the rules; flows that are already open stay open.
func (f *Filter) SetRules(r *Rules) {
	if r == nil {
		r = &Rules{allowAll: true}
	}
	f.rules.Store(r)
}

// SetClock replaces time.Now (tests).
func (f *Filter) SetClock(now func() time.Time) { f.now = now }

// Flows returns how many flows the table holds.
func (f *Filter) Flows() int {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return len(f.flows)
}

// parsed is what Allow needs from a packet.
type parsed struct {
	proto      uint8
	src, dst   netip.Addr
	sport, dpt uint16
	hasPorts   bool
	// reply: an ICMP echo reply (matched against the request's flow).
	echo, echoReply bool
}

func parse(b []byte) (p parsed, ok bool) {
	if len(b) < 1 {
		return p, false
	}
	var l4 []byte
	fragmentTail := false
	switch b[0] >> 4 {
	case 4:
		if len(b) < 20 {
			return p, false
		}
		ihl := int(b[0]&0x0f) * 4
		if ihl < 20 || len(b) < ihl {
			return p, false
		}
		p.proto = b[9]
		p.src = netip.AddrFrom4([4]byte(b[12:16]))
		p.dst = netip.AddrFrom4([4]byte(b[16:20]))
		fragOff := binary.BigEndian.Uint16(b[6:8]) & 0x1fff
		fragmentTail = fragOff != 0
		l4 = b[ihl:]
	case 6:
		if len(b) < 40 {
			return p, false
		}
		p.proto = b[6] // extension headers are not walked: they match as their own protocol
		p.src = netip.AddrFrom16([16]byte(b[8:24]))
		p.dst = netip.AddrFrom16([16]byte(b[24:40]))
		l4 = b[40:]
	default:
		return p, false
	}
	if fragmentTail {
		return p, true // no ports in a non-first fragment
	}
	switch p.proto {
	case protoTCP, protoUDP:
		if len(l4) >= 4 {
			p.sport = binary.BigEndian.Uint16(l4[0:2])
			p.dpt = binary.BigEndian.Uint16(l4[2:4])
			p.hasPorts = true
		}
	case protoICMP, protoICMPv6:
		if len(l4) >= 6 {
			t := l4[0]
			id := binary.BigEndian.Uint16(l4[4:6])
			switch {
			case (p.proto == protoICMP && t == 8) || (p.proto == protoICMPv6 && t == 128):
				p.echo, p.sport = true, id
			case (p.proto == protoICMP && t == 0) || (p.proto == protoICMPv6 && t == 129):
				p.echoReply, p.dpt = true, id
			}
		}
	}
	return p, true
}

// Allow reports whether packet may pass. inbound is true for a packet that
// came out of the tunnel (from a remote peer), false for one going into it.
func (f *Filter) Allow(packet []byte, inbound bool) bool {
	if f.rules.Load().allowAll {
		return true
	}
	return f.AllowAt(packet, inbound, f.now())
}

// AllowAt is Allow at the time now, for a data plane that judges packets in
// batches: it reads the clock once per batch (on some machines reading the
// clock costs as much as judging a packet).
func (f *Filter) AllowAt(packet []byte, inbound bool, now time.Time) bool {
	r := f.rules.Load()
	if r.allowAll {
		return true
	}
	p, ok := parse(packet)
	if !ok {
		return false
	}
	// A reply to a flow the other side opened, or a later packet of one this
	// side opened?
	if f.known(p, inbound, now) {
		return true
	}
	peer, rs := p.dst, &r.out
	if inbound {
		peer, rs = p.src, &r.in
	}
	if p.echoReply {
		return false // a reply without a request
	}
	if !rs.match(peer, p.proto, p.dpt, p.hasPorts) {
		return false
	}
	f.track(p, inbound, now)
	return true
}

// known looks the packet up in the flow table, both as a packet of a flow
// its sender opened and as a reply to a flow its receiver opened.
func (f *Filter) known(p parsed, inbound bool, now time.Time) bool {
	fwd := flowKey{proto: p.proto, src: p.src, dst: p.dst, sport: p.sport, dpt: p.dpt}
	rev := flowKey{proto: p.proto, src: p.dst, dst: p.src, sport: p.dpt, dpt: p.sport}
	if p.echoReply {
		// The request was keyed (id as source "port"); the reply carries the
		// same id, which parse put in dpt.
		rev = flowKey{proto: p.proto, src: p.dst, dst: p.src, sport: p.dpt}
	}
	f.mu.RLock()
	fl, fwdOK := f.flows[fwd]
	if fwdOK && fl.inbound != inbound {
		fwdOK = false // same tuple, but opened from the other side
	}
	if !fwdOK {
		fl, fwdOK = f.flows[rev]
		if fwdOK && fl.inbound == inbound {
			fwdOK = false
		}
	}
	f.mu.RUnlock()
	if !fwdOK {
		return false
	}
	n, last := now.UnixNano(), fl.last.Load()
	if time.Duration(n-last) > fl.timeout {
		return false
	}
	if n-last > int64(100*time.Millisecond) {
		fl.last.Store(n) // rarely: every packet storing would bounce the cache line between cores
	}
	return true
}

func (f *Filter) track(p parsed, inbound bool, now time.Time) {
	if p.echoReply {
		return
	}
	k := flowKey{proto: p.proto, src: p.src, dst: p.dst, sport: p.sport, dpt: p.dpt}
	if p.echo {
		k.dpt = 0
	}
	timeout := OtherTimeout
	switch p.proto {
	case protoTCP:
		timeout = TCPTimeout
	case protoUDP:
		timeout = UDPTimeout
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if fl, ok := f.flows[k]; ok && fl.inbound == inbound {
		fl.last.Store(now.UnixNano())
		return
	}
	if len(f.flows) >= MaxFlows {
		f.sweepLocked(now)
		if len(f.flows) >= MaxFlows {
			return
		}
	}
	fl := &flow{timeout: timeout, inbound: inbound}
	fl.last.Store(now.UnixNano())
	f.flows[k] = fl
}

// Sweep forgets expired flows. The engine calls it now and then; the table
// also sweeps itself when it fills up.
func (f *Filter) Sweep() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sweepLocked(f.now())
}

func (f *Filter) sweepLocked(now time.Time) {
	n := now.UnixNano()
	for k, fl := range f.flows {
		if time.Duration(n-fl.last.Load()) > fl.timeout {
			delete(f.flows, k)
		}
	}
}
