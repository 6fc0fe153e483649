package relay

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// gsoSupported reports whether the kernel takes UDP_SEGMENT on uc.
func gsoSupported(uc *net.UDPConn) bool {
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

// sendSegments sends buf to dst as one sendmsg with UDP_SEGMENT seg: the
// kernel (or the NIC) cuts it into datagrams of seg bytes, the last
// shorter. One trip through the stack instead of len(buf)/seg.
func sendSegments(uc *net.UDPConn, buf []byte, seg int, dst netip.AddrPort) error {
	rc, err := uc.SyscallConn()
	if err != nil {
		return err
	}
	var oob [24]byte // CmsgSpace(2) on 64-bit; checked below
	space := unix.CmsgSpace(2)
	if space > len(oob) {
		return errors.New("relay: control message too large")
	}
	h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
	h.Level, h.Type = unix.SOL_UDP, unix.UDP_SEGMENT
	h.SetLen(unix.CmsgLen(2))
	binary.NativeEndian.PutUint16(oob[unix.CmsgLen(0):], uint16(seg))

	var to unix.Sockaddr
	if uc.LocalAddr().(*net.UDPAddr).IP.To4() != nil {
		to = &unix.SockaddrInet4{Port: int(dst.Port()), Addr: dst.Addr().Unmap().As4()}
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
	if serr != nil {
		return os.NewSyscallError("sendmsg", serr)
	}
	return nil
}

// gsoFatal: EIO means the route's device cannot checksum GSO packets;
// EINVAL or EOPNOTSUPP that the kernel refuses the segment size.
func gsoFatal(err error) bool {
	var serr *os.SyscallError
	if errors.As(err, &serr) {
		return serr.Err == unix.EIO || serr.Err == unix.EINVAL || serr.Err == unix.EOPNOTSUPP
	}
	return false
}

const msgTrunc = unix.MSG_TRUNC
