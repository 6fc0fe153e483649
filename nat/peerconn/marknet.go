package peerconn

import (
	"context"
	"net"

	"github.com/pion/transport/v3"
	"github.com/pion/transport/v3/stdnet"

	"meshd/internal/fwmark"
)

// MarkedNet wraps n (nil: the host's network) so that every socket pion
// opens through it towards TURN servers carries the agent's firewall mark
// (internal/fwmark): the relay stays reachable over the underlay when the
// mesh routes a network that contains it. Networks that are not the
// host's (pion's vnet in tests) are returned as they are.
func MarkedNet(n transport.Net) (transport.Net, error) {
	if n == nil {
		sn, err := stdnet.NewNet()
		if err != nil {
			return nil, err
		}
		n = sn
	}
	if _, ok := n.(*stdnet.Net); !ok {
		return n, nil
	}
	return &markedNet{Net: n}, nil
}

type markedNet struct{ transport.Net }

var (
	markListen = net.ListenConfig{Control: fwmark.Control}
	markDialer = net.Dialer{Control: fwmark.Control}
)

func (n *markedNet) ListenPacket(network, address string) (net.PacketConn, error) {
	return markListen.ListenPacket(context.Background(), network, address)
}

func (n *markedNet) ListenUDP(network string, laddr *net.UDPAddr) (transport.UDPConn, error) {
	addr := ""
	if laddr != nil {
		addr = laddr.String()
	}
	c, err := markListen.ListenPacket(context.Background(), network, addr)
	if err != nil {
		return nil, err
	}
	return c.(*net.UDPConn), nil
}

func (n *markedNet) DialUDP(network string, laddr, raddr *net.UDPAddr) (transport.UDPConn, error) {
	c, err := dialMarked(network, laddr, raddr)
	if err != nil {
		return nil, err
	}
	return c.(*net.UDPConn), nil
}

func (n *markedNet) DialTCP(network string, laddr, raddr *net.TCPAddr) (transport.TCPConn, error) {
	c, err := dialMarked(network, laddr, raddr)
	if err != nil {
		return nil, err
	}
	return c.(*net.TCPConn), nil
}

// dialMarked dials raddr from laddr (nil: any) with the mark set.
func dialMarked[A *net.UDPAddr | *net.TCPAddr](network string, laddr, raddr A) (net.Conn, error) {
	d := markDialer
	if laddr != nil {
		d.LocalAddr = net.Addr(laddr)
	}
	return d.Dial(network, net.Addr(raddr).String())
}

func (n *markedNet) Dial(network, address string) (net.Conn, error) {
	return markDialer.Dial(network, address)
}

func (n *markedNet) CreateDialer(d *net.Dialer) transport.Dialer {
	cp := *d
	cp.Control = fwmark.Control
	return n.Net.CreateDialer(&cp)
}
