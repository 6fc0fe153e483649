//go:build linux

package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The tests in this file prove, with plain UDP and no meshd, that the
// routers behave as the design says. They give the meshd matrix meaning:
// a pair that plain hole punching connects should be direct in meshd too.

// reflector answers every UDP datagram with the address it came from, as
// the binding part of STUN does.
func reflector(t *testing.T, h *Host, port uint16) netip.AddrPort {
	t.Helper()
	c, err := h.ListenUDP(netip.AddrPortFrom(netip.IPv4Unspecified(), port))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 1500)
		for {
			_, from, err := c.ReadFromUDPAddrPort(buf)
			if errors.Is(err, net.ErrClosed) {
				return
			}
			if err != nil {
				continue // an ICMP error queued for the socket
			}
			c.WriteToUDPAddrPort([]byte(from.String()), from)
		}
	}()
	t.Cleanup(func() { c.Close(); <-done })
	return netip.AddrPortFrom(h.IP(), port)
}

// mapped asks a reflector which public address c's datagrams come from. It
// returns an invalid address when no answer comes (UDP blocked).
func mapped(c *net.UDPConn, refl netip.AddrPort) netip.AddrPort {
	buf := make([]byte, 1500)
	for try := 0; try < 5; try++ {
		c.WriteToUDPAddrPort([]byte("?"), refl)
		c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		for {
			n, from, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				if isTimeout(err) {
					break
				}
				continue
			}
			if from == refl {
				c.SetReadDeadline(time.Time{})
				ap, _ := netip.ParseAddrPort(string(buf[:n]))
				return ap
			}
		}
	}
	c.SetReadDeadline(time.Time{})
	return netip.AddrPort{}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// recvErr makes an unconnected socket report ICMP errors (port
// unreachable) as ECONNREFUSED from reads.
func recvErr(t *testing.T, c *net.UDPConn) {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_RECVERR, 1) }); err != nil || serr != nil {
		t.Fatalf("IP_RECVERR: %v %v", err, serr)
	}
}

// TestNATMapping checks each router's mapping: home and bare keep the
// source port for every destination (endpoint-independent), symmetric
// takes a new port per destination, UDP-blocked lets no UDP out but TCP.
func TestNATMapping(t *testing.T) {
	l := New(t)
	var refls []netip.AddrPort
	for i := 1; i <= 3; i++ {
		refls = append(refls, reflector(t, l.Host(fmt.Sprintf("stun%d", i), nil), 3478))
	}
	ln, err := l.Internet().ListenTCP(netip.AddrPortFrom(internetBridge, 8080))
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			io.Copy(c, c)
			c.Close()
		}
	}()

	const port = 40000
	var rows [][]string
	for _, k := range Kinds {
		h := l.Host(string(k), l.Router("r"+string(k), k))
		c, err := h.ListenUDP(netip.AddrPortFrom(netip.IPv4Unspecified(), port))
		if err != nil {
			t.Fatal(err)
		}
		ports := map[uint16]bool{}
		var seen []string
		for _, r := range refls {
			m := mapped(c, r)
			if !m.IsValid() {
				seen = append(seen, "no answer")
				continue
			}
			seen = append(seen, m.String())
			ports[m.Port()] = true
			if m.Addr() != h.PublicIP() {
				t.Errorf("%s: reflector saw %v, want the router's %v", k, m, h.PublicIP())
			}
		}
		rows = append(rows, append([]string{string(k)}, seen...))
		switch k {
		case Home, Bare:
			if len(ports) != 1 || !ports[port] {
				t.Errorf("%s: mappings %v, want port %d kept for every destination", k, seen, port)
			}
		case Symmetric:
			if len(ports) != len(refls) {
				t.Errorf("%s: mappings %v, want a new port per destination", k, seen)
			}
		case UDPBlocked:
			if len(ports) != 0 {
				t.Errorf("%s: UDP got out: %v", k, seen)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			tc, err := h.DialTCP(ctx, netip.AddrPortFrom(internetBridge, 8080))
			cancel()
			if err != nil {
				t.Fatalf("%s: TCP blocked too: %v", k, err)
			}
			tc.SetDeadline(time.Now().Add(3 * time.Second))
			buf := make([]byte, 4)
			if _, err := tc.Write([]byte("ping")); err != nil {
				t.Fatal(err)
			}
			if _, err := io.ReadFull(tc, buf); err != nil || string(buf) != "ping" {
				t.Errorf("%s: TCP echo: %q %v", k, buf, err)
			}
			tc.Close()
		}
	}
	t.Logf("mapping of local port %d as seen by three reflectors:\n%s", port,
		table([]string{"router", "stun1", "stun2", "stun3"}, rows))
}

// punchOutcome is what one hole-punching attempt did.
type punchOutcome struct {
	ok        bool // both sides heard the other
	refused   bool // the first side's opening packets were refused (ICMP)
	aGot, bGt bool
}

func (o punchOutcome) String() string {
	switch {
	case o.ok:
		return "ok"
	case o.aGot || o.bGt:
		return "one-way"
	case o.refused:
		return "fail (refused)"
	}
	return "fail"
}

type punchSide struct {
	name  string
	c     *net.UDPConn
	cands []netip.AddrPort // where the other side may reach it
	got   atomic.Bool
	refd  atomic.Bool
}

func openSide(t *testing.T, h *Host, port uint16, refl netip.AddrPort) *punchSide {
	t.Helper()
	c, err := h.ListenUDP(netip.AddrPortFrom(netip.IPv4Unspecified(), port))
	if err != nil {
		t.Fatal(err)
	}
	recvErr(t, c)
	s := &punchSide{name: h.Name(), c: c, cands: []netip.AddrPort{netip.AddrPortFrom(h.IP(), port)}}
	if m := mapped(c, refl); m.IsValid() && m != s.cands[0] {
		s.cands = append(s.cands, m)
	}
	return s
}

// run sends to the peer's candidates each round and reads until the round
// ends; once a datagram from the peer arrives it answers its source (ICE's
// peer-reflexive candidate). It stops after rounds or when both sides heard
// each other.
func (s *punchSide) run(peer *punchSide, rounds int, both func() bool) {
	targets := peer.cands
	buf := make([]byte, 1500)
	msg := []byte("punch " + s.name)
	for i := 0; i < rounds && !both(); i++ {
		for _, to := range targets {
			s.c.WriteToUDPAddrPort(msg, to)
		}
		s.c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
		for {
			n, from, err := s.c.ReadFromUDPAddrPort(buf)
			if err != nil {
				if errors.Is(err, syscall.ECONNREFUSED) {
					s.refd.Store(true)
					continue
				}
				break // the round's deadline
			}
			if string(buf[:n]) == "punch "+peer.name {
				s.got.Store(true)
				targets = []netip.AddrPort{from}
			}
		}
	}
}

// punch opens UDP between a and b as ICE would without a relay. a sends
// first and alone until its packets have arrived at b's side (refused by
// b's router) or a few rounds passed; then both send.
func punch(t *testing.T, a, b *Host, pa, pb uint16, refl netip.AddrPort) punchOutcome {
	sa, sb := openSide(t, a, pa, refl), openSide(t, b, pb, refl)
	both := func() bool { return sa.got.Load() && sb.got.Load() }
	never := func() bool { return sa.refd.Load() || sa.got.Load() }
	sa.run(sb, 15, never) // a's opening packets, before b sends anything
	refused := sa.refd.Load()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); sa.run(sb, 75, both) }()
	go func() { defer wg.Done(); sb.run(sa, 75, both) }()
	wg.Wait()
	return punchOutcome{ok: both(), refused: refused, aGot: sa.got.Load(), bGt: sb.got.Load()}
}

// TestNATPunch runs plain UDP hole punching between every pair of the
// world, in both orders (who sends first), and checks the design's claims:
// home↔home, public↔anything with UDP and the same LAN connect; bare↔bare,
// symmetric↔symmetric and anything with the UDP-blocked host do not.
func TestNATPunch(t *testing.T) {
	l := New(t)
	refl := reflector(t, l.Host("stun", nil), 3478)
	world := buildWorld(l)
	l.Step("build")

	type result struct{ ab, ba punchOutcome }
	ps := pairs(world)
	results := make([]result, len(ps))
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for i, p := range ps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			base := uint16(20000 + 2*i)
			results[i].ab = punch(t, p[0].host, p[1].host, base, base+10000, refl)
			results[i].ba = punch(t, p[1].host, p[0].host, base+1+10000, base+1, refl)
		}()
	}
	wg.Wait()
	l.Step("punch every pair twice")

	var rows [][]string
	byPair := map[string]result{}
	for i, p := range ps {
		a, b, r := p[0], p[1], results[i]
		byPair[a.name+"/"+b.name], byPair[b.name+"/"+a.name] = r, result{r.ba, r.ab}
		want := expectation(a, b)
		rows = append(rows, []string{a.name + " ↔ " + b.name, a.label() + " ↔ " + b.label(), string(want), r.ab.String(), r.ba.String()})
		bothBare := a.nat == Bare && b.nat == Bare && a.host.Router() != b.host.Router()
		switch {
		case want == expectDirect && (!r.ab.ok || !r.ba.ok):
			t.Errorf("%s ↔ %s (%s ↔ %s): punching should work: %v first: %v, %v first: %v", a.name, b.name, a.label(), b.label(), a.name, r.ab, b.name, r.ba)
		case want == expectRelayed && (r.ab.ok || r.ba.ok):
			t.Errorf("%s ↔ %s (%s ↔ %s): punching should fail: %v first: %v, %v first: %v", a.name, b.name, a.label(), b.label(), a.name, r.ab, b.name, r.ba)
		case bothBare && (r.ab.ok || r.ba.ok || !r.ab.refused || !r.ba.refused):
			t.Errorf("%s ↔ %s: two bare masquerades should refuse the opening packet and then fail: %v first: %v, %v first: %v", a.name, b.name, a.name, r.ab, b.name, r.ba)
		}
	}
	t.Logf("plain UDP hole punching (ok / one-way / fail; 'refused': the first side's opening packet was answered by port unreachable):\n%s",
		table([]string{"pair", "kinds", "design", "left first", "right first"}, rows))
	t.Logf("as a grid (row sends first):\n%s", grid(world, func(a, b member) string {
		return strings.TrimSuffix(byPair[a.name+"/"+b.name].ab.String(), " (refused)")
	}))
}

// TestNATInputFilter shows why the home router's input filter matters: an
// unsolicited datagram to a bare masquerade router reaches its input
// (answered by port unreachable) and leaves a conntrack entry, so the
// router's next mapping of the same local port towards that sender takes
// another port. The home router drops the datagram silently and keeps the
// port.
func TestNATInputFilter(t *testing.T) {
	l := New(t)
	peer := l.Host("peer", nil)
	const port, peerPort = 40000, 50000
	for _, k := range []Kind{Home, Bare} {
		h := l.Host(string(k), l.Router("r"+string(k), k))
		pc, err := peer.ListenUDP(netip.AddrPortFrom(netip.IPv4Unspecified(), peerPort))
		if err != nil {
			t.Fatal(err)
		}
		recvErr(t, pc)
		// The peer knocks on the router's public address at the port the
		// host is about to use.
		refused := false
		buf := make([]byte, 1500)
		for try := 0; try < 5 && !refused; try++ {
			pc.WriteToUDPAddrPort([]byte("knock"), netip.AddrPortFrom(h.PublicIP(), port))
			pc.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
			_, _, err := pc.ReadFromUDPAddrPort(buf)
			refused = errors.Is(err, syscall.ECONNREFUSED)
		}
		// Then the host sends to the peer from that port.
		hc, err := h.ListenUDP(netip.AddrPortFrom(netip.IPv4Unspecified(), port))
		if err != nil {
			t.Fatal(err)
		}
		var from netip.AddrPort
		for try := 0; try < 10 && !from.IsValid(); try++ {
			hc.WriteToUDPAddrPort([]byte("hello"), netip.AddrPortFrom(peer.IP(), peerPort))
			pc.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
			n, f, err := pc.ReadFromUDPAddrPort(buf)
			if err == nil && string(buf[:n]) == "hello" {
				from = f
			}
		}
		pc.Close()
		t.Logf("%-5s router: knock refused=%v; then the host's port %d reached the peer as %v", k, refused, port, from)
		if !from.IsValid() {
			t.Fatalf("%s: the host's datagram never reached the peer", k)
		}
		switch k {
		case Home:
			if refused || from.Port() != port {
				t.Errorf("home router: refused=%v, mapped to %v: want a silent drop and port %d kept", refused, from, port)
			}
		case Bare:
			if !refused || from.Port() == port {
				t.Errorf("bare router: refused=%v, mapped to %v: want the knock refused and another port than %d", refused, from, port)
			}
		}
	}
}
