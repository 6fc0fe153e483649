// Package dnstest runs fake upstream DNS servers on loopback for tests of
// the mesh resolver (internal/dns) and of the agent that runs it.
package dnstest

import (
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"

	mdns "github.com/miekg/dns"
)

// Upstream is a DNS server on 127.0.0.1 (UDP and TCP, one port) that
// answers A queries from a table and NXDOMAIN otherwise, or never answers
// when Silent. It records the names it was asked.
type Upstream struct {
	Addr netip.AddrPort

	mu      sync.Mutex
	answers map[string]netip.Addr
	silent  bool
	asked   []string
}

// Start starts an upstream that answers name → addr (names with or
// without the trailing dot) and registers its shutdown with tb.Cleanup.
func Start(tb testing.TB, answers map[string]string) *Upstream {
	tb.Helper()
	u := &Upstream{answers: map[string]netip.Addr{}}
	for n, a := range answers {
		u.answers[mdns.Fqdn(strings.ToLower(n))] = netip.MustParseAddr(a)
	}
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	ln, err := net.Listen("tcp4", pc.LocalAddr().String())
	if err != nil {
		pc.Close()
		tb.Fatal(err)
	}
	u.Addr = pc.LocalAddr().(*net.UDPAddr).AddrPort()
	var wg sync.WaitGroup
	for _, srv := range []*mdns.Server{{PacketConn: pc, Handler: u}, {Listener: ln, Handler: u}} {
		wg.Add(1)
		go func() { defer wg.Done(); srv.ActivateAndServe() }()
	}
	tb.Cleanup(func() {
		pc.Close()
		ln.Close()
		wg.Wait()
	})
	return u
}

// Silence makes the upstream drop every query from now on (a dead server).
func (u *Upstream) Silence() {
	u.mu.Lock()
	u.silent = true
	u.mu.Unlock()
}

// Asked returns the names asked so far, lowercase and fully qualified.
func (u *Upstream) Asked() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]string(nil), u.asked...)
}

// ServeDNS implements mdns.Handler.
func (u *Upstream) ServeDNS(w mdns.ResponseWriter, req *mdns.Msg) {
	if len(req.Question) != 1 {
		return
	}
	q := req.Question[0]
	name := strings.ToLower(q.Name)
	u.mu.Lock()
	u.asked = append(u.asked, name)
	silent := u.silent
	a, ok := u.answers[name]
	u.mu.Unlock()
	if silent {
		return
	}
	resp := new(mdns.Msg)
	resp.SetReply(req)
	switch {
	case !ok:
		resp.Rcode = mdns.RcodeNameError
	case q.Qtype == mdns.TypeA && a.Is4():
		resp.Answer = append(resp.Answer, &mdns.A{Hdr: mdns.RR_Header{Name: q.Name, Rrtype: mdns.TypeA, Class: mdns.ClassINET, Ttl: 30}, A: net.IP(a.AsSlice())})
	}
	w.WriteMsg(resp)
}
