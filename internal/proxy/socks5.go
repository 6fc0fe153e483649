package proxy

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"time"

	"go.uber.org/zap"
)

// SOCKS5 (RFC 1928) constants.
const (
	socksVersion = 5

	methodNoAuth       = 0x00
	methodNoAcceptable = 0xff

	cmdConnect      = 1
	cmdUDPAssociate = 3

	atypIPv4   = 1
	atypDomain = 3
	atypIPv6   = 4

	repSucceeded        = 0x00
	repGeneralFailure   = 0x01
	repNotAllowed       = 0x02
	repNetUnreachable   = 0x03
	repHostUnreachable  = 0x04
	repConnRefused      = 0x05
	repCmdNotSupported  = 0x07
	repAddrNotSupported = 0x08
)

// SOCKS5 is a SOCKS5 server with CONNECT (TCP), UDP ASSOCIATE (udp.go)
// and no authentication: it listens on loopback unless told otherwise.
// BIND is answered "command not supported".
type SOCKS5 struct {
	Mesh Mesh
	Log  *zap.Logger
	// Handshake bounds the greeting and request (0: HandshakeTimeout).
	Handshake time.Duration
}

// Serve serves SOCKS5 on ln until ctx ends (it closes ln then), and
// returns once every connection it handled is closed.
func (s *SOCKS5) Serve(ctx context.Context, ln net.Listener) error {
	return serve(ctx, ln, s.log(), s.handle)
}

func (s *SOCKS5) log() *zap.Logger {
	if s.Log == nil {
		return zap.NewNop()
	}
	return s.Log
}

// socksRequest is a parsed CONNECT request.
type socksRequest struct {
	cmd  byte
	host string
	port uint16
}

func (s *SOCKS5) handle(ctx context.Context, c net.Conn) {
	hs := s.Handshake
	if hs == 0 {
		hs = HandshakeTimeout
	}
	_ = c.SetDeadline(time.Now().Add(hs))
	req, rep, err := readSOCKS(c)
	if err != nil {
		if rep != 0 {
			writeReply(c, rep, nil)
		}
		s.log().Debug("socks5: bad request", zap.Stringer("from", c.RemoteAddr()), zap.Error(err))
		return
	}
	if req.cmd == cmdUDPAssociate {
		s.associate(ctx, c, req)
		return
	}
	up, err := dial(ctx, s.Mesh, req.host, req.port)
	if err != nil {
		writeReply(c, replyFor(err), nil)
		s.log().Info("socks5: refused", zap.String("to", clean(req.host)), zap.Uint16("port", req.port), zap.Error(err))
		return
	}
	if err := writeReply(c, repSucceeded, up.LocalAddr()); err != nil {
		up.Close()
		return
	}
	_ = c.SetDeadline(time.Time{})
	pipe(ctx, c, up)
}

// readSOCKS reads the greeting (answering it) and the request. On error,
// rep is the reply to send (0: none, the client gets the connection
// closed).
func readSOCKS(c net.Conn) (socksRequest, byte, error) {
	var req socksRequest
	var hdr [2]byte
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		return req, 0, fmt.Errorf("greeting: %w", err)
	}
	if hdr[0] != socksVersion {
		return req, 0, fmt.Errorf("greeting: version %d, want 5 (SOCKS4 is not supported)", hdr[0])
	}
	if hdr[1] == 0 {
		return req, 0, errors.New("greeting: no methods")
	}
	methods := make([]byte, hdr[1])
	if _, err := io.ReadFull(c, methods); err != nil {
		return req, 0, fmt.Errorf("greeting: %w", err)
	}
	if !strings.ContainsRune(string(methods), methodNoAuth) {
		_, _ = c.Write([]byte{socksVersion, methodNoAcceptable})
		return req, 0, errors.New("greeting: the client offers no method this proxy takes (no authentication)")
	}
	if _, err := c.Write([]byte{socksVersion, methodNoAuth}); err != nil {
		return req, 0, err
	}
	var rh [4]byte
	if _, err := io.ReadFull(c, rh[:]); err != nil {
		return req, 0, fmt.Errorf("request: %w", err)
	}
	if rh[0] != socksVersion {
		return req, repGeneralFailure, fmt.Errorf("request: version %d, want 5", rh[0])
	}
	req.cmd = rh[1]
	switch rh[3] {
	case atypIPv4, atypIPv6:
		b := make([]byte, 4)
		if rh[3] == atypIPv6 {
			b = make([]byte, 16)
		}
		if _, err := io.ReadFull(c, b); err != nil {
			return req, 0, fmt.Errorf("request: address: %w", err)
		}
		a, _ := netip.AddrFromSlice(b)
		req.host = a.String()
	case atypDomain:
		var n [1]byte
		if _, err := io.ReadFull(c, n[:]); err != nil {
			return req, 0, fmt.Errorf("request: name: %w", err)
		}
		if n[0] == 0 {
			return req, repHostUnreachable, errors.New("request: empty name")
		}
		b := make([]byte, n[0])
		if _, err := io.ReadFull(c, b); err != nil {
			return req, 0, fmt.Errorf("request: name: %w", err)
		}
		req.host = string(b)
	default:
		return req, repAddrNotSupported, fmt.Errorf("request: address type %d", rh[3])
	}
	var p [2]byte
	if _, err := io.ReadFull(c, p[:]); err != nil {
		return req, 0, fmt.Errorf("request: port: %w", err)
	}
	req.port = binary.BigEndian.Uint16(p[:])
	if req.cmd != cmdConnect && req.cmd != cmdUDPAssociate {
		return req, repCmdNotSupported, fmt.Errorf("request: command %d (CONNECT and UDP ASSOCIATE are supported)", req.cmd)
	}
	return req, 0, nil
}

// writeReply sends a reply with the bound address bnd (nil: 0.0.0.0:0).
func writeReply(c net.Conn, rep byte, bnd net.Addr) error {
	ap := netip.AddrPortFrom(netip.IPv4Unspecified(), 0)
	switch t := bnd.(type) {
	case *net.TCPAddr:
		ap = t.AddrPort()
	case *net.UDPAddr:
		ap = t.AddrPort()
	}
	_, err := c.Write(appendAddr([]byte{socksVersion, rep, 0}, ap))
	return err
}

// appendAddr appends ATYP, the address and the port.
func appendAddr(b []byte, ap netip.AddrPort) []byte {
	a := ap.Addr().Unmap()
	if a.Is6() {
		b = append(b, atypIPv6)
	} else {
		b = append(b, atypIPv4)
	}
	b = append(b, a.AsSlice()...)
	return binary.BigEndian.AppendUint16(b, ap.Port())
}

// replyFor maps a dial error to a SOCKS5 reply code.
func replyFor(err error) byte {
	switch {
	case errors.Is(err, ErrNotAllowed):
		return repNotAllowed
	case errors.Is(err, ErrDown):
		return repNetUnreachable
	case errors.Is(err, ErrNoSuchName):
		return repHostUnreachable
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded):
		return repHostUnreachable
	case strings.Contains(err.Error(), "refused"):
		return repConnRefused
	}
	return repGeneralFailure
}
