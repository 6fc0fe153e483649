package peerconn

import (
	"encoding/binary"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/stun/v2"

	"meshd/internal/turncred"
)

// Keeping relay sessions alive across TURN credential rotation.
//
// Control issues short-lived TURN credentials (TURN REST: username
// "<expiry>:<id>") and sends fresh ones in every map well before the old
// ones expire, so that a deleted peer's credentials soon stop working at
// any relay. pion's TURN client signs every request of an allocation
// (Refresh, CreatePermission, ChannelBind) with the username it allocated
// with, and has no way to change it: left alone, every relayed session
// would break once its first credential expired.
//
// The connections under pion's TURN clients are ours (turnSocket for UDP,
// stream conns from the session's TURN dialer for TCP and TLS), so each
// authenticated request pion writes is signed again on its way out with
// the newest credential of the same id (turnCreds.resign): USERNAME
// replaced, MESSAGE-INTEGRITY computed with the new long-term key
// (MD5(username:realm:password)), FINGERPRINT after it. This works
// because:
//
//   - a TURN server ties an allocation to its 5-tuple, not to the username
//     (RFC 8656 only says it SHOULD check the username stays the same;
//     pion's server, which meshd's relay runs, looks allocations up by
//     5-tuple alone, and its nonces do not depend on the username);
//   - pion's client does not check MESSAGE-INTEGRITY on responses (which
//     the server signs with the key of the username it was sent), it
//     reads the class, error code and attributes only.
//
// A server that ties an allocation to its first username (coturn does)
// answers a request signed anew with 441 Wrong Credentials. The connection
// then stops signing anew (signer.fixed), and pion's next refresh goes out
// with the username it allocated with: behind such a server a relayed
// session lasts until its first credential expires, as without this.

// turnCred is one credential of the current map.
type turnCred struct {
	user, pass string
	expires    time.Time
}

// turnCreds are a relay session's newest TURN credentials, by id.
type turnCreds struct {
	mu   sync.RWMutex
	byID map[string]turnCred
	// allocLifetime, when set, is the LIFETIME put in Allocate requests
	// (Timing.TURNLifetime; pion asks for none). Set before use.
	allocLifetime time.Duration
	// resigned counts requests signed again (tests, debugging).
	resigned atomic.Uint64
}

// set takes the credentials of uris: a TURN REST username replaces the
// one of its id unless it expires earlier. Other usernames (coturn's
// static users) are not rotated and are left alone.
func (c *turnCreds) set(uris []*stun.URI) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, u := range uris {
		if u == nil || u.Username == "" || u.Password == "" {
			continue
		}
		exp, id, err := turncred.Parse(u.Username)
		if err != nil {
			continue
		}
		if old, ok := c.byID[id]; ok && old.expires.After(exp) {
			continue
		}
		if c.byID == nil {
			c.byID = make(map[string]turnCred)
		}
		c.byID[id] = turnCred{user: u.Username, pass: u.Password, expires: exp}
	}
}

// current returns the credential to sign a request made with username:
// one of the same id that expires later, or with same, the one of the id
// whatever its expiry.
func (c *turnCreds) current(username string, same bool) (turnCred, bool) {
	exp, id, err := turncred.Parse(username)
	if err != nil {
		return turnCred{}, false
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	cur, ok := c.byID[id]
	if !ok || !same && !cur.expires.After(exp) {
		return turnCred{}, false
	}
	return cur, true
}

// resignHeader is the size of a STUN header.
const resignHeader = 20

// isTURNRequest reports whether p is exactly one STUN request of a TURN
// method that carries long-term credentials, by its header alone (the
// cheap test every message pion writes goes through).
func isTURNRequest(p []byte) bool {
	if !stun.IsMessage(p) || p[0]&0xc0 != 0 || int(binary.BigEndian.Uint16(p[2:4]))+resignHeader != len(p) {
		return false
	}
	switch binary.BigEndian.Uint16(p[0:2]) {
	case stunType0(stun.MethodAllocate, stun.ClassRequest),
		stunType0(stun.MethodRefresh, stun.ClassRequest),
		stunType0(stun.MethodCreatePermission, stun.ClassRequest),
		stunType0(stun.MethodChannelBind, stun.ClassRequest):
		return true
	}
	return false
}

// resign returns p signed with a newer credential of the same id, or p as
// it is: not an authenticated TURN request, no newer credential, or
// something it does not understand (then the server judges the original).
// p is not modified.
func (c *turnCreds) resign(p []byte) []byte {
	if c == nil || !isTURNRequest(p) {
		return p
	}
	m := &stun.Message{Raw: p}
	if m.Decode() != nil {
		return p
	}
	lifetime := c.allocLifetime
	setLifetime := lifetime > 0 && m.Type == stun.NewType(stun.MethodAllocate, stun.ClassRequest)
	var user stun.Username
	var realm stun.Realm
	var cur turnCred
	signed := user.GetFrom(m) == nil && realm.GetFrom(m) == nil && m.Contains(stun.AttrMessageIntegrity)
	switch {
	case m.Contains(stun.AttrMessageIntegritySHA256):
		return p
	case signed:
		var ok bool
		if cur, ok = c.current(user.String(), setLifetime); !ok {
			return p
		}
	case !setLifetime:
		return p
	}
	out := &stun.Message{Type: m.Type, TransactionID: m.TransactionID}
	out.WriteHeader()
	if setLifetime {
		var l [4]byte
		binary.BigEndian.PutUint32(l[:], uint32(lifetime/time.Second))
		out.Add(stun.AttrLifetime, l[:])
	}
	fingerprint := m.Contains(stun.AttrFingerprint)
attrs:
	for _, a := range m.Attributes {
		switch a.Type {
		case stun.AttrUsername:
			out.Add(stun.AttrUsername, []byte(cur.user))
		case stun.AttrLifetime:
			if !setLifetime {
				out.Add(a.Type, a.Value)
			}
		case stun.AttrMessageIntegrity, stun.AttrFingerprint:
			// What follows MESSAGE-INTEGRITY is FINGERPRINT or ignored
			// (RFC 8489 14.5).
			break attrs
		default:
			out.Add(a.Type, a.Value)
		}
	}
	if signed && stun.NewLongTermIntegrity(cur.user, realm.String(), cur.pass).AddTo(out) != nil {
		return p
	}
	if fingerprint && stun.Fingerprint.AddTo(out) != nil {
		return p
	}
	if signed && cur.user != user.String() {
		c.resigned.Add(1)
	}
	return out.Raw
}

// SetTURNCredentials gives a running relay session the TURN credentials of
// a newer map: the requests its TURN clients send from now on (refreshes
// of allocations, permissions and channels) are signed with them, so the
// session outlives the credentials it started with. Direct sessions
// ignore it.
func (s *Session) SetTURNCredentials(servers Servers) {
	if s.rnet != nil {
		s.rnet.creds.set(servers.TURN)
	}
}

// signer is one TURN connection's use of the session's credentials.
type signer struct {
	creds *turnCreds
	// fixed: the server answered 441 (it keeps an allocation's first
	// username); requests go out as pion signed them from then on.
	fixed atomic.Bool
}

func newSigner(c *turnCreds) *signer { return &signer{creds: c} }

// out returns what to send for p, a message pion writes.
func (s *signer) out(p []byte) []byte {
	if s == nil || s.fixed.Load() {
		return p
	}
	return s.creds.resign(p)
}

// in notes a message from the server: a 441 answer fixes the username.
func (s *signer) in(p []byte) {
	if s == nil || len(p) < resignHeader || p[0]&0xc0 != 0 || p[1]&0x10 == 0 || p[0]&0x01 == 0 {
		return // not a STUN error response (class bits 0b11)
	}
	if !stun.IsMessage(p) || s.fixed.Load() {
		return
	}
	m := &stun.Message{Raw: p}
	if m.Decode() != nil {
		return
	}
	var code stun.ErrorCodeAttribute
	if code.GetFrom(m) == nil && code.Code == stun.CodeWrongCredentials {
		s.fixed.Store(true)
	}
}

// stunScanner finds the STUN messages in a TURN/TCP or TURN/TLS stream
// from the server (RFC 8656 section 12.5: STUN messages and ChannelData
// padded to four bytes, back to back) for signer.in. It only watches; on
// anything it does not understand it stops watching.
type stunScanner struct {
	buf  []byte // a STUN message's bytes so far
	skip int    // ChannelData bytes still to pass
	dead bool
}

// maxScanMessage bounds a STUN message the scanner buffers.
const maxScanMessage = 4096

func (sc *stunScanner) feed(p []byte, fn func([]byte)) {
	for len(p) > 0 && !sc.dead {
		if sc.skip > 0 {
			n := min(sc.skip, len(p))
			sc.skip -= n
			p = p[n:]
			continue
		}
		need := 4
		if len(sc.buf) >= 4 {
			l := int(binary.BigEndian.Uint16(sc.buf[2:4]))
			switch sc.buf[0] >> 6 {
			case 0:
				need = resignHeader + l
			case 1:
				sc.skip = (l+3)&^3 - (len(sc.buf) - 4)
				sc.buf = sc.buf[:0]
				continue
			default:
				sc.dead = true
				return
			}
			if need > maxScanMessage {
				sc.dead = true
				return
			}
		}
		n := min(need-len(sc.buf), len(p))
		sc.buf = append(sc.buf, p[:n]...)
		p = p[n:]
		if len(sc.buf) >= resignHeader && len(sc.buf) == need {
			fn(sc.buf)
			sc.buf = sc.buf[:0]
		}
	}
}
