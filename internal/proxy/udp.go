package proxy

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"go.uber.org/zap"
)

// Bounds of one UDP association.
const (
	// udpMaxDests bounds the destinations one association talks to (a
	// netstack socket and a goroutine each).
	udpMaxDests = 64
	// udpIdle closes a destination's socket after this long without a
	// datagram either way.
	udpIdle = 2 * time.Minute
)

// associate serves UDP ASSOCIATE (RFC 1928 section 7): a UDP socket on the
// address the client reached the proxy on relays the client's datagrams
// to their destinations in the mesh (each checked as CONNECT is, for UDP)
// and the answers back, until the client closes the TCP connection.
// Fragments (FRAG ≠ 0) and datagrams from other hosts are dropped.
func (s *SOCKS5) associate(ctx context.Context, c net.Conn, req socksRequest) {
	local, _ := c.LocalAddr().(*net.TCPAddr)
	remote, _ := c.RemoteAddr().(*net.TCPAddr)
	if local == nil || remote == nil {
		writeReply(c, repGeneralFailure, nil)
		return
	}
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: local.IP})
	if err != nil {
		writeReply(c, repGeneralFailure, nil)
		s.log().Warn("socks5: udp associate: listen", zap.Error(err))
		return
	}
	defer pc.Close()
	if err := writeReply(c, repSucceeded, pc.LocalAddr()); err != nil {
		return
	}
	_ = c.SetDeadline(time.Time{})
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() { // the association lives as long as the TCP connection
		_, _ = c.Read(make([]byte, 1))
		cancel()
		pc.Close()
	}()
	context.AfterFunc(ctx, func() { pc.Close() })

	a := &association{s: s, pc: pc, clientIP: remote.AddrPort().Addr().Unmap(), dests: map[string]net.Conn{}}
	if req.port != 0 {
		a.client = netip.AddrPortFrom(a.clientIP, req.port)
	}
	defer a.close()
	buf := make([]byte, 64<<10)
	for {
		n, from, err := pc.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
		a.mu.Lock()
		stranger := from.Addr() != a.clientIP || (a.client.IsValid() && from != a.client)
		if !stranger {
			a.client = from
		}
		a.mu.Unlock()
		if stranger {
			continue
		}
		host, port, data, ok := parseUDPHeader(buf[:n])
		if !ok {
			continue
		}
		up, err := a.dest(ctx, host, port)
		if err != nil {
			s.log().Debug("socks5: udp datagram refused", zap.String("to", clean(host)), zap.Uint16("port", port), zap.Error(err))
			continue
		}
		_ = up.SetDeadline(time.Now().Add(udpIdle))
		_, _ = up.Write(data)
	}
}

type association struct {
	s        *SOCKS5
	pc       *net.UDPConn
	clientIP netip.Addr
	client   netip.AddrPort // set by the request or the first datagram

	mu    sync.Mutex
	dests map[string]net.Conn
	wg    sync.WaitGroup
}

var errTooManyDests = errors.New("proxy: udp association: too many destinations")

// dest returns the socket for host:port, dialing it the first time.
func (a *association) dest(ctx context.Context, host string, port uint16) (net.Conn, error) {
	key := net.JoinHostPort(host, strconv.Itoa(int(port)))
	a.mu.Lock()
	defer a.mu.Unlock()
	if up, ok := a.dests[key]; ok {
		return up, nil
	}
	if len(a.dests) >= udpMaxDests {
		return nil, errTooManyDests
	}
	up, err := dial(ctx, dialUDP{a.s.Mesh}, host, port)
	if err != nil {
		return nil, err
	}
	a.dests[key] = up
	src := netip.AddrPortFrom(netip.IPv4Unspecified(), port)
	if ra, ok := up.RemoteAddr().(*net.UDPAddr); ok {
		src = ra.AddrPort()
	}
	a.wg.Add(1)
	go func() { // answers back to the client, until idle or closed
		defer a.wg.Done()
		defer func() {
			a.mu.Lock()
			if a.dests[key] == up {
				delete(a.dests, key)
			}
			a.mu.Unlock()
			up.Close()
		}()
		b := make([]byte, 64<<10)
		hdr := appendAddr([]byte{0, 0, 0}, src)
		for {
			n, err := up.Read(b)
			if err != nil {
				return
			}
			_ = up.SetDeadline(time.Now().Add(udpIdle))
			a.mu.Lock()
			to := a.client
			a.mu.Unlock()
			_, _ = a.pc.WriteToUDPAddrPort(append(hdr[:len(hdr):len(hdr)], b[:n]...), to)
		}
	}()
	return up, nil
}

func (a *association) close() {
	a.mu.Lock()
	for _, up := range a.dests {
		up.Close()
	}
	a.mu.Unlock()
	a.wg.Wait()
}

// dialUDP is a Mesh whose Dial is DialUDP (so dial's timeout applies).
type dialUDP struct{ Mesh }

func (d dialUDP) Dial(ctx context.Context, host string, port uint16) (net.Conn, error) {
	return d.Mesh.DialUDP(ctx, host, port)
}

// parseUDPHeader reads RSV RSV FRAG ATYP DST.ADDR DST.PORT DATA.
func parseUDPHeader(b []byte) (host string, port uint16, data []byte, ok bool) {
	if len(b) < 4 || b[2] != 0 {
		return "", 0, nil, false
	}
	rest := b[4:]
	switch b[3] {
	case atypIPv4, atypIPv6:
		n := 4
		if b[3] == atypIPv6 {
			n = 16
		}
		if len(rest) < n+2 {
			return "", 0, nil, false
		}
		a, _ := netip.AddrFromSlice(rest[:n])
		host, rest = a.String(), rest[n:]
	case atypDomain:
		if len(rest) < 1 || rest[0] == 0 || len(rest) < 1+int(rest[0])+2 {
			return "", 0, nil, false
		}
		host, rest = string(rest[1:1+int(rest[0])]), rest[1+int(rest[0]):]
	default:
		return "", 0, nil, false
	}
	return host, binary.BigEndian.Uint16(rest[:2]), rest[2:], true
}
