package netcheck

import (
	"bytes"
	"context"
	"net"
	"net/netip"
	"strconv"
	"time"
)

// portMapBudget bounds the gateway probes: a gateway that speaks a protocol
// answers at once, one that does not never answers.
const portMapBudget = 1200 * time.Millisecond

// probePortMapping asks the gateway whether it speaks NAT-PMP, PCP or UPnP
// (SSDP). It only asks: no mapping is made.
func probePortMapping(ctx context.Context, o Options) PortMapping {
	var pm PortMapping
	gw := o.Gateway
	if !gw.IsValid() {
		g, err := defaultGateway()
		if err != nil {
			pm.Error = err.Error()
			return pm
		}
		gw = g
	}
	pm.Gateway = gw.String()
	if d, ok := ctx.Deadline(); !ok || time.Until(d) > portMapBudget {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, portMapBudget)
		defer cancel()
	}
	port := o.PortMapPort
	if port == 0 {
		port = PortMapPort
	}
	pmpc := make(chan [2]bool, 1)
	upnpc := make(chan bool, 1)
	go func() { a, b := probePMP(ctx, netip.AddrPortFrom(gw, uint16(port))); pmpc <- [2]bool{a, b} }()
	go func() { upnpc <- probeSSDP(ctx, gw, o.SSDPAddr) }()
	r := <-pmpc
	pm.NATPMP, pm.PCP = r[0], r[1]
	pm.UPnP = <-upnpc
	return pm
}

// probePMP sends a NAT-PMP external-address request and a PCP ANNOUNCE to
// the gateway's port and reports which were answered. A NAT-PMP-only
// gateway answers the PCP request with a version-0 error (RFC 6887 §9):
// that counts as NAT-PMP, not PCP.
func probePMP(ctx context.Context, gw netip.AddrPort) (pmp, pcp bool) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "udp4", gw.String())
	if err != nil {
		return false, false
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	local := netip.IPv4Unspecified()
	if ua, ok := c.LocalAddr().(*net.UDPAddr); ok {
		if a, ok := netip.AddrFromSlice(ua.IP); ok {
			local = a
		}
	}
	pcpReq := make([]byte, 24)
	pcpReq[0], pcpReq[1] = 2, 0 // version 2, request, opcode ANNOUNCE
	ip16 := local.As16()        // IPv4-mapped for an IPv4 address, as PCP wants
	copy(pcpReq[8:], ip16[:])
	send := func() {
		c.Write([]byte{0, 0}) // NAT-PMP: version 0, opcode 0 (external address)
		c.Write(pcpReq)
	}
	send()
	go func() {
		t := time.NewTimer(300 * time.Millisecond)
		defer t.Stop()
		select {
		case <-ctx.Done():
		case <-t.C:
			send()
		}
	}()
	buf := make([]byte, 1100)
	for !(pmp && pcp) {
		n, err := c.Read(buf)
		if err != nil {
			break
		}
		switch {
		case n >= 8 && buf[0] == 0 && buf[1] >= 128:
			pmp = true
		case n >= 24 && buf[0] == 2 && buf[1]&0x80 != 0:
			pcp = true
		}
	}
	return pmp, pcp
}

// probeSSDP sends an M-SEARCH for an internet gateway device to the
// multicast group and to the gateway's port 1900, and reports whether any
// answered.
func probeSSDP(ctx context.Context, gw netip.Addr, group string) bool {
	var lc net.ListenConfig
	pc, err := lc.ListenPacket(ctx, "udp4", "0.0.0.0:0")
	if err != nil {
		return false
	}
	c := pc.(*net.UDPConn)
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	if group == "" {
		group = DefaultSSDPAddr
	}
	var dsts []netip.AddrPort
	if group != "-" {
		if ap, err := netip.ParseAddrPort(group); err == nil {
			dsts = append(dsts, ap)
		}
	}
	dsts = append(dsts, netip.AddrPortFrom(gw, 1900))
	for _, d := range dsts {
		msg := "M-SEARCH * HTTP/1.1\r\nHOST: " + net.JoinHostPort(d.Addr().String(), strconv.Itoa(int(d.Port()))) +
			"\r\nMAN: \"ssdp:discover\"\r\nMX: 1\r\nST: urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\n\r\n"
		c.WriteToUDPAddrPort([]byte(msg), d)
	}
	buf := make([]byte, 2048)
	for {
		n, _, err := c.ReadFromUDPAddrPort(buf)
		if err != nil {
			return false
		}
		if bytes.HasPrefix(buf[:n], []byte("HTTP/1.1 200")) {
			return true
		}
	}
}
