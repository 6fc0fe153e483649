package peerconn

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/pion/transport/v3"
	"github.com/pion/transport/v3/stdnet"
)

// excludingNet is a transport.Net whose interfaces lack the addresses in
// exclude: the mux lists local addresses through it, and the mesh's own
// overlay address must not become a host candidate.
type excludingNet struct {
	transport.Net
	exclude []netip.Prefix
}

// ExcludingNet wraps n (nil: the host's network) so that addresses in
// exclude are not listed.
func ExcludingNet(n transport.Net, exclude []netip.Prefix) (transport.Net, error) {
	if n == nil {
		sn, err := stdnet.NewNet()
		if err != nil {
			return nil, fmt.Errorf("peerconn: %w", err)
		}
		n = sn
	}
	if len(exclude) == 0 {
		return n, nil
	}
	return &excludingNet{Net: n, exclude: exclude}, nil
}

func (n *excludingNet) Interfaces() ([]*transport.Interface, error) {
	ifs, err := n.Net.Interfaces()
	if err != nil {
		return nil, err
	}
	out := make([]*transport.Interface, 0, len(ifs))
	for _, ifc := range ifs {
		addrs, err := ifc.Addrs()
		if err != nil {
			continue
		}
		f := transport.NewInterface(ifc.Interface)
		for _, a := range addrs {
			if !n.excluded(a) {
				f.AddAddress(a)
			}
		}
		out = append(out, f)
	}
	return out, nil
}

func (n *excludingNet) excluded(a net.Addr) bool {
	var ip net.IP
	switch v := a.(type) {
	case *net.IPNet:
		ip = v.IP
	case *net.IPAddr:
		ip = v.IP
	default:
		return false
	}
	addr, ok := netip.AddrFromSlice(ip)
	if !ok {
		return false
	}
	addr = addr.Unmap()
	for _, p := range n.exclude {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}
