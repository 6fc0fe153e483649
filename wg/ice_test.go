package wg

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/pion/ice/v3"
	"github.com/pion/logging"
)

// loopbackPacketConn narrows STUNConn's unspecified local address to
// loopback, so that the ICE mux offers only 127.0.0.1 (test traffic stays on
// loopback). Reads and writes are STUNConn's own.
type loopbackPacketConn struct{ net.PacketConn }

func (c loopbackPacketConn) LocalAddr() net.Addr {
	la := c.PacketConn.LocalAddr().(*net.UDPAddr)
	return &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: la.Port}
}

// iceOver returns an ICE agent whose host candidates live on n's WireGuard
// socket, through a pion UDP mux reading STUNConn — how the engine uses it.
func iceOver(tb testing.TB, n *node) *ice.Agent {
	tb.Helper()
	lf := logging.NewDefaultLoggerFactory()
	lf.DefaultLogLevel = logging.LogLevelError
	mux := ice.NewUDPMuxDefault(ice.UDPMuxParams{
		UDPConn: loopbackPacketConn{n.dev.STUNConn()},
		Logger:  lf.NewLogger("mux"),
	})
	agent, err := ice.NewAgent(&ice.AgentConfig{
		NetworkTypes:     []ice.NetworkType{ice.NetworkTypeUDP4},
		CandidateTypes:   []ice.CandidateType{ice.CandidateTypeHost},
		UDPMux:           mux,
		IncludeLoopback:  true,
		MulticastDNSMode: ice.MulticastDNSModeDisabled,
		LoggerFactory:    lf,
	})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		agent.Close()
		mux.Close()
	})
	return agent
}

// TestICEOverWireGuardSocket connects two ICE agents whose only candidates
// are the two devices' WireGuard sockets, then sets the selected pair as
// the WireGuard path and moves data: the flow the agent engine follows.
func TestICEOverWireGuardSocket(t *testing.T) {
	a, b := newNode(t, 1), newNode(t, 2)
	must(t, a.dev.SetPeer(a.peer(b)))
	must(t, b.dev.SetPeer(b.peer(a)))
	ia, ib := iceOver(t, a), iceOver(t, b)

	// Trickle candidates across (signal's job in the agent).
	must(t, ia.OnCandidate(func(c ice.Candidate) {
		if c != nil {
			ib.AddRemoteCandidate(c)
		}
	}))
	must(t, ib.OnCandidate(func(c ice.Candidate) {
		if c != nil {
			ia.AddRemoteCandidate(c)
		}
	}))
	ufragA, pwdA, err := ia.GetLocalUserCredentials()
	must(t, err)
	ufragB, pwdB, err := ib.GetLocalUserCredentials()
	must(t, err)
	must(t, ia.GatherCandidates())
	must(t, ib.GatherCandidates())

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	accepted := make(chan error, 1)
	go func() {
		_, err := ib.Accept(ctx, ufragA, pwdA)
		accepted <- err
	}()
	if _, err := ia.Dial(ctx, ufragB, pwdB); err != nil {
		t.Fatalf("ICE dial over the WireGuard socket: %v", err)
	}
	must(t, <-accepted)

	pair, err := ia.GetSelectedCandidatePair()
	must(t, err)
	if pair.Local.Port() != int(a.dev.ListenPort()) || pair.Remote.Port() != int(b.dev.ListenPort()) {
		t.Fatalf("selected pair %s:%d -> %s:%d, want the WireGuard ports %d -> %d",
			pair.Local.Address(), pair.Local.Port(), pair.Remote.Address(), pair.Remote.Port(),
			a.dev.ListenPort(), b.dev.ListenPort())
	}
	remote := netip.AddrPortFrom(netip.MustParseAddr(pair.Remote.Address()), uint16(pair.Remote.Port()))
	must(t, a.dev.SetDirect(b.pub, remote))
	pairB, err := ib.GetSelectedCandidatePair()
	must(t, err)
	must(t, b.dev.SetDirect(a.pub, netip.AddrPortFrom(netip.MustParseAddr(pairB.Remote.Address()), uint16(pairB.Remote.Port()))))

	echoServer(t, b, 7)
	roundTrip(t, dial(t, a, b, 7), 256<<10)
}
