package peerconn

// Kind says what a session is for: a direct path on the WireGuard socket,
// or a relay path through TURN. Callers map it to and from their own wire
// types; this package speaks no contract.
type Kind uint8

const (
	Direct Kind = 1
	Relay  Kind = 2
)

func (k Kind) String() string {
	switch k {
	case Direct:
		return "direct"
	case Relay:
		return "relay"
	}
	return "unknown"
}

// Credentials are a session's ICE username fragment and password: the
// remote peer needs them to connect (they travel in an offer or answer).
type Credentials struct{ Ufrag, Pwd string }

// RelayServer is one relay of a network map: its URLs (stun:, turn:,
// turns:) and the TURN credentials that go with them.
type RelayServer struct {
	URLs                 []string
	Username, Credential string
}
