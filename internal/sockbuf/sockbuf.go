// Package sockbuf gives sockets large kernel buffers, as wireguard-go does
// for its own: bursts of relayed WireGuard traffic overflow the system's
// default (~208 KiB) and the kernel drops datagrams. The relay (nat/relay)
// sizes its UDP sockets with it, the agent's TURN sockets (nat/peerconn)
// theirs.
package sockbuf

import "syscall"

// bufferSetter is what *net.UDPConn and *net.TCPConn have.
type bufferSetter interface {
	SetReadBuffer(int) error
	SetWriteBuffer(int) error
}

// Set gives c receive and send buffers of size bytes, as far as it may:
// up to the system's maximum (net.core.[rw]mem_max), then, on Linux with
// CAP_NET_ADMIN, past it. Conns of other kinds are left alone; failures
// leave the buffers as they were.
func Set(c any, size int) {
	if bs, ok := c.(bufferSetter); ok {
		_ = bs.SetReadBuffer(size)
		_ = bs.SetWriteBuffer(size)
	}
	if sc, ok := c.(syscall.Conn); ok {
		if rc, err := sc.SyscallConn(); err == nil {
			force(rc, size)
		}
	}
}
