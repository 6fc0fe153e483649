package peerconn

import (
	"fmt"
	"net"

	"github.com/pion/transport/v3"
	"github.com/pion/transport/v3/stdnet"

	"meshd/internal/sockbuf"
)

// SocketBuffer is the receive and send buffer size that relay sessions give
// the UDP sockets pion opens to TURN servers: WireGuard's own socket gets
// the same (wireguard-go's socketBufferSize). With the system default
// (208 KiB) a relayed bulk transfer overflows the receiving agent's TURN
// socket long before any CPU is busy (bench/NOTES.md).
const SocketBuffer = 7 << 20

// BufferedNet wraps n (nil: the host's network) so that every UDP socket
// it opens or dials gets receive and send buffers of size bytes: past
// net.core.[rw]mem_max where the process may (root or CAP_NET_ADMIN, with
// SO_RCVBUFFORCE/SO_SNDBUFFORCE, as wireguard-go does), else as much as
// the system allows. Setting buffers never fails an open.
//
// TCP connections (TURN over TCP or TLS) are left alone: setting a TCP
// socket's buffer turns off the kernel's autotuning, which already grows
// them to net.ipv4.tcp_[rw]mem and adapts to the path's round trip.
//
// Sockets of a network that are not system sockets (pion's vnet) are
// returned as they are.
func BufferedNet(n transport.Net, size int) (transport.Net, error) {
	if n == nil {
		sn, err := stdnet.NewNet()
		if err != nil {
			return nil, fmt.Errorf("peerconn: %w", err)
		}
		n = sn
	}
	if size <= 0 {
		return n, nil
	}
	return &bufferedNet{Net: n, size: size}, nil
}

type bufferedNet struct {
	transport.Net
	size int
}

func (n *bufferedNet) ListenPacket(network, address string) (net.PacketConn, error) {
	c, err := n.Net.ListenPacket(network, address)
	if err == nil {
		sockbuf.Set(c, n.size)
	}
	return c, err
}

func (n *bufferedNet) ListenUDP(network string, laddr *net.UDPAddr) (transport.UDPConn, error) {
	c, err := n.Net.ListenUDP(network, laddr)
	if err == nil {
		sockbuf.Set(c, n.size)
	}
	return c, err
}

func (n *bufferedNet) DialUDP(network string, laddr, raddr *net.UDPAddr) (transport.UDPConn, error) {
	c, err := n.Net.DialUDP(network, laddr, raddr)
	if err == nil {
		sockbuf.Set(c, n.size)
	}
	return c, err
}

func (n *bufferedNet) Dial(network, address string) (net.Conn, error) {
	c, err := n.Net.Dial(network, address)
	if err == nil {
		if _, ok := c.(*net.UDPConn); ok {
			sockbuf.Set(c, n.size)
		}
	}
	return c, err
}

func (n *bufferedNet) CreateDialer(d *net.Dialer) transport.Dialer {
	return bufferedDialer{d: n.Net.CreateDialer(d), size: n.size}
}

type bufferedDialer struct {
	d    transport.Dialer
	size int
}

func (d bufferedDialer) Dial(network, address string) (net.Conn, error) {
	c, err := d.d.Dial(network, address)
	if err == nil {
		if _, ok := c.(*net.UDPConn); ok {
			sockbuf.Set(c, d.size)
		}
	}
	return c, err
}
