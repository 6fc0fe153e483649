package udpgso

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Supported reports whether the kernel takes UDP_SEGMENT on uc.
func Supported(uc *net.UDPConn) bool {
	rc, err := uc.SyscallConn()
	if err != nil {
		return false
	}
	ok := false
	_ = rc.Control(func(fd uintptr) {
		_, err := unix.GetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_SEGMENT)
		ok = err == nil
	})
	return ok
}

// Send sends buf to dst as datagrams of seg bytes (the last one shorter)
// in one sendmsg. Errors that mean GSO cannot work here wrap
// ErrUnsupported.
func Send(uc *net.UDPConn, buf []byte, seg int, dst netip.AddrPort) error {
	rc, err := uc.SyscallConn()
	if err != nil {
		return err
	}
	var oob [24]byte // CmsgSpace(2) on 64-bit; checked below
	space := unix.CmsgSpace(2)
	if space > len(oob) {
		return fmt.Errorf("%w: control message of %d bytes", ErrUnsupported, space)
	}
	h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
	h.Level, h.Type = unix.SOL_UDP, unix.UDP_SEGMENT
	h.SetLen(unix.CmsgLen(2))
	binary.NativeEndian.PutUint16(oob[unix.CmsgLen(0):], uint16(seg))

	var to unix.Sockaddr
	if a := dst.Addr().Unmap(); a.Is4() && uc.LocalAddr().(*net.UDPAddr).IP.To4() != nil {
		to = &unix.SockaddrInet4{Port: int(dst.Port()), Addr: a.As4()}
	} else {
		to = &unix.SockaddrInet6{Port: int(dst.Port()), Addr: dst.Addr().As16()}
	}
	var serr error
	werr := rc.Write(func(fd uintptr) bool {
		_, serr = unix.SendmsgN(int(fd), buf, oob[:space], to, 0)
		return serr != unix.EAGAIN
	})
	if werr != nil {
		return werr
	}
	switch {
	case serr == nil:
		return nil
	case errors.Is(serr, unix.EIO), errors.Is(serr, unix.EINVAL), errors.Is(serr, unix.EOPNOTSUPP):
		// EIO: the route's device cannot checksum GSO packets; EINVAL or
		// EOPNOTSUPP: the kernel refuses the segment size or GSO.
		return fmt.Errorf("%w: %w", ErrUnsupported, os.NewSyscallError("sendmsg", serr))
	default:
		return os.NewSyscallError("sendmsg", serr)
	}
}
