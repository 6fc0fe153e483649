package control

// CheckAccess answers "may A open a connection to B on tcp/22?" from the
// same compiled rules the agents enforce: it computes both peers' network
// maps from the account's current state, compiles their firewall rules with
// internal/filter, and judges a first packet of the connection on both
// sides (leaving A, entering B). No second copy of the policy semantics
// exists to drift from what the tunnels do.

import (
	"context"
	"encoding/binary"
	"fmt"
	"net/netip"
	"strings"

	"connectrpc.com/connect"

	adminv1 "meshd/api/admin/v1"
	"meshd/internal/filter"
	"meshd/internal/netmap"
	"meshd/store"
)

func (x *adminAPI) CheckAccess(ctx context.Context, req *connect.Request[adminv1.CheckAccessRequest]) (*connect.Response[adminv1.CheckAccessResponse], error) {
	return handle(ctx, req, func(a *account, actor string, m *adminv1.CheckAccessRequest) (*adminv1.CheckAccessResponse, error) {
		return a.checkAccess(ctx, m)
	})
}

func (a *account) checkAccess(_ context.Context, m *adminv1.CheckAccessRequest) (*adminv1.CheckAccessResponse, error) {
	proto := strings.ToLower(strings.TrimSpace(m.Protocol))
	switch proto {
	case "tcp", "udp":
		if m.Port == 0 || m.Port > 65535 {
			return nil, invalidf("port %d: want 1 to 65535 for %s", m.Port, proto)
		}
	case "icmp":
		if m.Port != 0 {
			return nil, invalidf("port: icmp has no ports; leave it empty")
		}
	default:
		return nil, invalidf("protocol %q: want tcp, udp or icmp", m.Protocol)
	}
	a.mu.Lock()
	src, err := a.peerRef(m.Source)
	if err != nil {
		a.mu.Unlock()
		return nil, err
	}
	dst, err := a.peerRef(m.Destination)
	if err != nil {
		a.mu.Unlock()
		return nil, err
	}
	in := a.input()
	names := map[string]string{}
	for _, p := range a.policies {
		names[p.ID] = p.Name
	}
	a.mu.Unlock()
	if src.ID == dst.ID {
		return nil, invalidf("destination: %s is the source; pick another peer", dst.Name)
	}
	what := fmt.Sprintf("%s to %s on %s", src.Name, dst.Name, proto)
	if proto != "icmp" {
		what += fmt.Sprintf("/%d", m.Port)
	}
	allowed, why := judge(netmap.Build(in), src, dst, proto, uint16(m.Port))
	if !allowed {
		return &adminv1.CheckAccessResponse{Reason: what + ": refused: " + why}, nil
	}
	// Which policies allow it: each enabled policy alone.
	out := &adminv1.CheckAccessResponse{Allowed: true}
	all := in.Policies
	for _, p := range all {
		if !p.Enabled {
			continue
		}
		in.Policies = []netmap.Policy{p}
		if ok, _ := judge(netmap.Build(in), src, dst, proto, uint16(m.Port)); ok {
			out.Policies = append(out.Policies, names[p.ID])
		}
	}
	out.Reason = what + ": allowed by " + strings.Join(out.Policies, ", ")
	return out, nil
}

// judge decides whether the first packet from src to dst passes both
// agents' filters under ix, and says why not.
func judge(ix *netmap.Index, src, dst *store.Peer, proto string, port uint16) (bool, string) {
	srcMap, dstMap := ix.Map(src.ID), ix.Map(dst.ID)
	if srcMap == nil || dstMap == nil {
		return false, "a peer is not in the network map"
	}
	listed := false
	for _, p := range srcMap.Peers {
		listed = listed || p.PublicKey == dst.PublicKey
	}
	if !listed {
		return false, "no enabled policy connects them (neither peer's map lists the other)"
	}
	pkt := firstPacket(netip.MustParseAddr(src.OverlayIP), netip.MustParseAddr(dst.OverlayIP), proto, port)
	out, _ := filter.Compile(srcMap.FirewallRules)
	if !filter.New(out).Allow(pkt, false) {
		return false, src.Name + "'s rules do not let it send this"
	}
	in, _ := filter.Compile(dstMap.FirewallRules)
	if !filter.New(in).Allow(pkt, true) {
		return false, dst.Name + "'s rules do not accept this from " + src.Name
	}
	return true, ""
}

// firstPacket is the packet that opens such a connection: a TCP SYN, a UDP
// datagram or an ICMP echo request, over IPv4 (overlay addresses are IPv4).
func firstPacket(src, dst netip.Addr, proto string, port uint16) []byte {
	b := make([]byte, 20+20)
	b[0] = 0x45
	binary.BigEndian.PutUint16(b[2:4], uint16(len(b)))
	b[8] = 64
	s4, d4 := src.As4(), dst.As4()
	copy(b[12:16], s4[:])
	copy(b[16:20], d4[:])
	l4 := b[20:]
	switch proto {
	case "tcp":
		b[9] = 6
		binary.BigEndian.PutUint16(l4[0:2], 40000)
		binary.BigEndian.PutUint16(l4[2:4], port)
		l4[12], l4[13] = 5<<4, 0x02 // SYN
	case "udp":
		b[9] = 17
		binary.BigEndian.PutUint16(l4[0:2], 40000)
		binary.BigEndian.PutUint16(l4[2:4], port)
	default:
		b[9] = 1
		l4[0] = 8 // echo request
		binary.BigEndian.PutUint16(l4[4:6], 1)
	}
	return b
}
