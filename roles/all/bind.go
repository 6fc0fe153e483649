package all

import (
	"fmt"
	"net"
)

// ports holds what `meshd all` binds before it touches --data, so that a
// second server started by mistake (another --data, same ports) fails on
// the busy port instead of first creating a whole new network.
type ports struct {
	https net.Listener // --listen, served for the whole run
	// The STUN port (--stun-listen, UDP and TCP) is held only until the
	// relay binds it itself: the relay's sockets are made with options of
	// their own (SO_REUSEPORT workers), so the probe gives way to them.
	stunUDP net.PacketConn
	stunTCP net.Listener
}

// bindPorts binds the HTTPS port and probes the STUN port. The error names
// the port and the flag that changes it.
func bindPorts(listen, stun string, stunTCP bool) (*ports, error) {
	var p ports
	var err error
	if p.https, err = net.Listen("tcp", listen); err != nil {
		return nil, fmt.Errorf("listen tcp %s: %w (is another process on that port? pick one with --listen)", listen, err)
	}
	if p.stunUDP, err = net.ListenPacket("udp", stun); err != nil {
		p.close()
		return nil, fmt.Errorf("listen udp %s: %w (is another process on that port? pick one with --stun-listen)", stun, err)
	}
	if stunTCP {
		if p.stunTCP, err = net.Listen("tcp", stun); err != nil {
			p.close()
			return nil, fmt.Errorf("listen tcp %s: %w (is another process on that port? pick one with --stun-listen, or --no-turn-tcp)", stun, err)
		}
	}
	return &p, nil
}

// releaseSTUN frees the STUN port for the relay.
func (p *ports) releaseSTUN() {
	if p.stunUDP != nil {
		p.stunUDP.Close()
		p.stunUDP = nil
	}
	if p.stunTCP != nil {
		p.stunTCP.Close()
		p.stunTCP = nil
	}
}

// close frees everything bound so far (bindPorts failing half-way).
func (p *ports) close() {
	p.releaseSTUN()
	if p.https != nil {
		p.https.Close()
	}
}
