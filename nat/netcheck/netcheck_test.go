package netcheck

import (
	"context"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"meshd/nat/netcheck/stuntest"
)

func run(t *testing.T, o Options) *Report {
	t.Helper()
	o.Log = zaptest.NewLogger(t)
	if !o.Gateway.IsValid() {
		o.Gateway = netip.MustParseAddr("127.0.0.1")
		o.PortMapPort = silentPort(t)
	}
	if o.SSDPAddr == "" {
		o.SSDPAddr = "-"
	}
	if o.Timeout == 0 {
		o.Timeout = 2 * time.Second
	}
	r, err := Run(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// silentPort is a loopback UDP port that never answers.
func silentPort(t *testing.T) int {
	c, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c.LocalAddr().(*net.UDPAddr).Port
}

func TestTwoServersSameMappingIsNotSymmetric(t *testing.T) {
	a, b := stuntest.Listen(t), stuntest.Listen(t)
	r := run(t, Options{STUN: []string{"stun:" + a.String(), a.String(), b.String()}})
	if !r.UDP || !r.IPv4 || r.GlobalV4 == "" {
		t.Fatalf("want UDP and IPv4 with a global address, got %+v", r)
	}
	if len(r.Relays) != 2 {
		t.Fatalf("the same address twice must be probed once: %+v", r.Relays)
	}
	if r.MappingVariesByDest == nil || *r.MappingVariesByDest {
		t.Fatalf("same mapping from both servers: want varies=false, got %v (%s)", r.MappingVariesByDest, r.MappingNote)
	}
	for _, p := range r.Relays {
		if p.Mapped == "" || p.LatencyMs <= 0 || p.Error != "" {
			t.Fatalf("probe %+v: want a mapped address and a latency", p)
		}
	}
	if r.NearestRelay == "" {
		t.Fatal("no nearest relay")
	}
	if r.IPv6 || r.IPv6Note != "no relay has an IPv6 address" {
		t.Fatalf("ipv6 %v note %q", r.IPv6, r.IPv6Note)
	}
}

func TestMappingPerDestinationIsSymmetric(t *testing.T) {
	a := stuntest.Listen(t)
	c, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	// The second server sees another port, as behind a symmetric NAT.
	stuntest.ServeMapped(t, c, func(u *net.UDPAddr) *net.UDPAddr {
		return &net.UDPAddr{IP: u.IP, Port: u.Port ^ 1}
	})
	r := run(t, Options{STUN: []string{a.String(), c.LocalAddr().String()}})
	if r.MappingVariesByDest == nil || !*r.MappingVariesByDest {
		t.Fatalf("want varies=true, got %v (%s); relays %+v", r.MappingVariesByDest, r.MappingNote, r.Relays)
	}
}

func TestOneServerCannotTell(t *testing.T) {
	a := stuntest.Listen(t)
	r := run(t, Options{STUN: []string{a.String()}})
	if r.MappingVariesByDest != nil || r.MappingNote != "unknown (one STUN server)" {
		t.Fatalf("got %v %q", r.MappingVariesByDest, r.MappingNote)
	}
}

func TestNoAnswerIsNoUDP(t *testing.T) {
	port := silentPort(t)
	start := time.Now()
	r := run(t, Options{STUN: []string{"127.0.0.1:" + itoa(port)}, Timeout: 700 * time.Millisecond})
	if r.UDP || r.IPv4 || r.MappingVariesByDest != nil || r.Relays[0].Error != "no answer" {
		t.Fatalf("want no UDP, got %+v", r)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("took %v with a 700ms timeout", d)
	}
}

func TestBadURLs(t *testing.T) {
	for _, u := range []string{"turn:1.2.3.4:3478?transport=tcp", "nonsense", "1.2.3.4:99999"} {
		_, err := Run(context.Background(), Options{STUN: []string{u}, Timeout: time.Second})
		if err == nil || !strings.Contains(err.Error(), "netcheck:") {
			t.Errorf("%s: want a clear error, got %v", u, err)
		}
	}
	if _, err := Run(context.Background(), Options{}); err != ErrNoServers {
		t.Errorf("no servers: got %v", err)
	}
}

// fakeGateway answers NAT-PMP (and PCP when pcp) on loopback.
func fakeGateway(t *testing.T, pcp bool) int {
	c, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 1100)
		for {
			n, from, err := c.ReadFrom(buf)
			if err != nil {
				return
			}
			switch {
			case n == 2 && buf[0] == 0:
				c.WriteTo([]byte{0, 128, 0, 0, 0, 0, 0, 1, 198, 51, 100, 9}, from)
			case n >= 24 && buf[0] == 2 && pcp:
				resp := make([]byte, 24)
				resp[0], resp[1] = 2, 0x80
				c.WriteTo(resp, from)
			case n >= 24 && buf[0] == 2:
				c.WriteTo([]byte{0, 0x80, 0, 1, 0, 0, 0, 0}, from) // unsupported version
			}
		}
	}()
	t.Cleanup(func() { c.Close(); <-done })
	return c.LocalAddr().(*net.UDPAddr).Port
}

func TestPortMappingProtocols(t *testing.T) {
	a := stuntest.Listen(t)
	lo := netip.MustParseAddr("127.0.0.1")
	r := run(t, Options{STUN: []string{a.String()}, Gateway: lo, PortMapPort: fakeGateway(t, false), SSDPAddr: "-"})
	if !r.PortMapping.NATPMP || r.PortMapping.PCP || r.PortMapping.UPnP {
		t.Fatalf("NAT-PMP-only gateway: got %+v", r.PortMapping)
	}
	r = run(t, Options{STUN: []string{a.String()}, Gateway: lo, PortMapPort: fakeGateway(t, true), SSDPAddr: "-"})
	if !r.PortMapping.NATPMP || !r.PortMapping.PCP {
		t.Fatalf("PCP gateway: got %+v", r.PortMapping)
	}
	r = run(t, Options{STUN: []string{a.String()}})
	if r.PortMapping.NATPMP || r.PortMapping.PCP || r.PortMapping.UPnP {
		t.Fatalf("silent gateway: got %+v", r.PortMapping)
	}
}

func TestUPnPAnswer(t *testing.T) {
	c, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 2048)
		for {
			n, from, err := c.ReadFrom(buf)
			if err != nil {
				return
			}
			if strings.HasPrefix(string(buf[:n]), "M-SEARCH") {
				c.WriteTo([]byte("HTTP/1.1 200 OK\r\nST: urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\n\r\n"), from)
			}
		}
	}()
	t.Cleanup(func() { c.Close(); <-done })
	a := stuntest.Listen(t)
	r := run(t, Options{STUN: []string{a.String()}, SSDPAddr: c.LocalAddr().String()})
	if !r.PortMapping.UPnP {
		t.Fatalf("want UPnP found, got %+v", r.PortMapping)
	}
}

func itoa(i int) string { return strconv.Itoa(i) }

func TestIPv6Server(t *testing.T) {
	c, err := net.ListenPacket("udp6", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	stuntest.Serve(t, c)
	a := stuntest.Listen(t)
	r := run(t, Options{STUN: []string{a.String(), c.LocalAddr().String()}})
	if !r.IPv4 || !r.IPv6 || !strings.HasPrefix(r.GlobalV6, "[::1]:") || r.IPv6Note != "" {
		t.Fatalf("want IPv4 and IPv6, got %+v", r)
	}
	// IPv6 answers do not count towards the IPv4 mapping verdict.
	if r.MappingVariesByDest != nil {
		t.Fatalf("one IPv4 server: want no verdict, got %v", *r.MappingVariesByDest)
	}
}
