package relaytest

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/pion/stun/v2"

	"meshd/internal/turncred"
)

// RawClient is a minimal TURN client over UDP for load generation: it
// allocates, binds channels and deallocates; the data path (ChannelData
// on Conn) is the caller's, so that a benchmark can batch it and measure
// the server rather than a client library.
type RawClient struct {
	// Conn is connected to the server.
	Conn *net.UDPConn
	// Relayed is the allocation's relayed address.
	Relayed netip.AddrPort

	cred         turncred.Credential
	realm, nonce string
}

// magicCookie is STUN's fixed header word (RFC 5389 section 6).
const magicCookie = 0x2112A442

// ChannelData header and the first channel number (RFC 8656 section 12).
const (
	ChannelDataHeader = 4
	FirstChannel      = 0x4000
)

// DialRaw allocates on server with cred.
func DialRaw(server netip.AddrPort, cred turncred.Credential) (*RawClient, error) {
	conn, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(server))
	if err != nil {
		return nil, err
	}
	_ = conn.SetReadBuffer(4 << 20)
	_ = conn.SetWriteBuffer(4 << 20)
	c := &RawClient{Conn: conn, cred: cred}
	res, err := c.do(stun.MethodAllocate, rawAttr{stun.AttrRequestedTransport, []byte{17, 0, 0, 0}})
	if err != nil {
		conn.Close()
		return nil, err
	}
	var relayed stun.XORMappedAddress
	if err := relayed.GetFromAs(res, stun.AttrXORRelayedAddress); err != nil {
		conn.Close()
		return nil, fmt.Errorf("allocate: no relayed address: %w", err)
	}
	ip, _ := netip.AddrFromSlice(relayed.IP)
	c.Relayed = netip.AddrPortFrom(ip.Unmap(), uint16(relayed.Port))
	return c, nil
}

// SetCredential signs the following requests with cred, as an agent
// does with a renewed credential.
func (c *RawClient) SetCredential(cred turncred.Credential) { c.cred = cred }

// ChannelBind binds channel ch to peer (which also permits peer).
func (c *RawClient) ChannelBind(ch uint16, peer netip.AddrPort) error {
	_, err := c.do(stun.MethodChannelBind,
		rawAttr{stun.AttrChannelNumber, []byte{byte(ch >> 8), byte(ch), 0, 0}},
		peerAddr(peer))
	return err
}

// CreatePermission permits peers (their ports do not matter), each sent
// in its own address family.
func (c *RawClient) CreatePermission(peers ...netip.AddrPort) error {
	attrs := make([]stun.Setter, len(peers))
	for i, p := range peers {
		attrs[i] = peerAddr(p)
	}
	_, err := c.do(stun.MethodCreatePermission, attrs...)
	return err
}

// Refresh refreshes the allocation for lifetime (whole seconds).
func (c *RawClient) Refresh(lifetime time.Duration) error {
	var v [4]byte
	binary.BigEndian.PutUint32(v[:], uint32(lifetime/time.Second))
	_, err := c.do(stun.MethodRefresh, rawAttr{stun.AttrLifetime, v[:]})
	return err
}

// Close deallocates (Refresh with lifetime 0) and closes the socket.
func (c *RawClient) Close() error {
	_, err := c.do(stun.MethodRefresh, rawAttr{stun.AttrLifetime, []byte{0, 0, 0, 0}})
	if cerr := c.Conn.Close(); err == nil {
		err = cerr
	}
	return err
}

// do runs one authenticated transaction, answering the server's 401 or
// 438 (stale nonce) challenge once, and retransmitting on loss.
func (c *RawClient) do(method stun.Method, attrs ...stun.Setter) (*stun.Message, error) {
	for challenge := 0; challenge < 2; challenge++ {
		setters := []stun.Setter{stun.TransactionID, stun.NewType(method, stun.ClassRequest)}
		setters = append(setters, attrs...)
		if c.nonce != "" {
			setters = append(setters, stun.NewUsername(c.cred.Username), stun.NewRealm(c.realm), stun.NewNonce(c.nonce),
				stun.NewLongTermIntegrity(c.cred.Username, c.realm, c.cred.Password))
		}
		setters = append(setters, stun.Fingerprint)
		req, err := stun.Build(setters...)
		if err != nil {
			return nil, err
		}
		res, err := c.roundTrip(req)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", method, err)
		}
		if res.Type.Class == stun.ClassSuccessResponse {
			return res, nil
		}
		var code stun.ErrorCodeAttribute
		_ = code.GetFrom(res)
		if code.Code != stun.CodeUnauthorized && code.Code != stun.CodeStaleNonce {
			return nil, fmt.Errorf("%s: error %d %s", method, code.Code, code.Reason)
		}
		var realm stun.Realm
		var nonce stun.Nonce
		if realm.GetFrom(res) != nil || nonce.GetFrom(res) != nil {
			return nil, fmt.Errorf("%s: challenge without realm and nonce", method)
		}
		c.realm, c.nonce = realm.String(), nonce.String()
	}
	return nil, fmt.Errorf("%s: refused after the credential challenge", method)
}

func (c *RawClient) roundTrip(req *stun.Message) (*stun.Message, error) {
	buf := make([]byte, 1500)
	for try := 0; try < 5; try++ {
		if _, err := c.Conn.Write(req.Raw); err != nil {
			return nil, err
		}
		_ = c.Conn.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		for {
			n, err := c.Conn.Read(buf)
			if err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					break
				}
				return nil, err
			}
			if n < 20 || buf[0]&0xc0 != 0 {
				continue // data
			}
			res := &stun.Message{Raw: append([]byte(nil), buf[:n]...)}
			if res.Decode() == nil && res.TransactionID == req.TransactionID {
				_ = c.Conn.SetReadDeadline(time.Time{})
				return res, nil
			}
		}
	}
	return nil, errors.New("no answer")
}

// PutChannelData writes a ChannelData header for a payload of n bytes on
// channel ch into b[:4].
func PutChannelData(b []byte, ch uint16, n int) {
	binary.BigEndian.PutUint16(b[0:2], ch)
	binary.BigEndian.PutUint16(b[2:4], uint16(n))
}

type rawAttr struct {
	t stun.AttrType
	v []byte
}

func (a rawAttr) AddTo(m *stun.Message) error {
	m.Add(a.t, a.v)
	return nil
}

// peerAddr is an XOR-PEER-ADDRESS in the address's own family: an
// IPv4-mapped IPv6 address goes as IPv6 (pion's encoder would send IPv4).
type peerAddr netip.AddrPort

func (p peerAddr) AddTo(m *stun.Message) error {
	ap := netip.AddrPort(p)
	ip := ap.Addr().AsSlice()
	v := make([]byte, 4+len(ip))
	v[1] = 1 // IPv4
	if len(ip) == 16 {
		v[1] = 2
	}
	var key [16]byte
	binary.BigEndian.PutUint32(key[:4], magicCookie)
	copy(key[4:], m.TransactionID[:])
	binary.BigEndian.PutUint16(v[2:4], ap.Port()^uint16(magicCookie>>16))
	for i := range ip {
		v[4+i] = ip[i] ^ key[i]
	}
	m.Add(stun.AttrXORPeerAddress, v)
	return nil
}
