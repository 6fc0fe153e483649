package peerconn

import (
	"fmt"
	"net"
	"strconv"

	"github.com/pion/stun/v2"
)

// Servers are the STUN and TURN servers of a network map, parsed.
type Servers struct {
	// STUN servers for server-reflexive candidates of direct sessions. A
	// turn:...?transport=udp server answers binding requests too, so it is
	// listed here as a stun: URL when the map names no STUN server on its
	// address.
	STUN []*stun.URI
	// TURN servers (with credentials) for relay sessions.
	TURN []*stun.URI
}

// ParseServers reads the relays of a network map. URLs it cannot parse are
// returned as an error next to whatever did parse: one bad URL does not take
// the others down.
func ParseServers(relays []RelayServer) (Servers, error) {
	var s Servers
	var firstErr error
	stunSeen := map[string]bool{}
	addSTUN := func(host string, port int) {
		k := net.JoinHostPort(host, strconv.Itoa(port))
		if stunSeen[k] {
			return
		}
		stunSeen[k] = true
		s.STUN = append(s.STUN, &stun.URI{Scheme: stun.SchemeTypeSTUN, Host: host, Port: port, Proto: stun.ProtoTypeUDP})
	}
	for _, r := range relays {
		for _, raw := range r.URLs {
			u, err := stun.ParseURI(raw)
			if err != nil {
				if firstErr == nil {
					firstErr = fmt.Errorf("relay url %q: %w", raw, err)
				}
				continue
			}
			switch u.Scheme {
			case stun.SchemeTypeSTUN, stun.SchemeTypeSTUNS:
				if u.Scheme == stun.SchemeTypeSTUN {
					addSTUN(u.Host, u.Port)
				}
			case stun.SchemeTypeTURN, stun.SchemeTypeTURNS:
				u.Username, u.Password = r.Username, r.Credential
				s.TURN = append(s.TURN, u)
			}
		}
	}
	// A TURN server over UDP is a STUN server as well.
	for _, u := range s.TURN {
		if u.Scheme == stun.SchemeTypeTURN && u.Proto == stun.ProtoTypeUDP {
			addSTUN(u.Host, u.Port)
		}
	}
	return s, firstErr
}

// Equal reports whether two server lists are the same (credentials included).
func (s Servers) Equal(o Servers) bool {
	eq := func(a, b []*stun.URI) bool {
		if len(a) != len(b) {
			return false
		}
		for i := range a {
			if *a[i] != *b[i] {
				return false
			}
		}
		return true
	}
	return eq(s.STUN, o.STUN) && eq(s.TURN, o.TURN)
}
