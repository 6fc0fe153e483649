// Package udpgso sends a run of equal-sized UDP datagrams to one address
// in a single sendmsg with UDP_SEGMENT (Linux UDP GSO): the kernel, or the
// NIC, cuts the buffer into datagrams after one trip through the stack
// instead of one trip per datagram. nat/relay batches ChannelData to TURN
// clients with it, nat/peerconn the agent's WireGuard messages to its TURN
// server. Elsewhere Supported is false and Send returns ErrUnsupported.
package udpgso

import "errors"

// ErrUnsupported wraps the errors that say GSO cannot work on this socket
// or route (the platform lacks it, the kernel refuses the segment size, or
// the route's device cannot checksum GSO packets): send the datagrams one
// by one instead, and stop trying GSO on that socket.
var ErrUnsupported = errors.New("udp gso unsupported")
