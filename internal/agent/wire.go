package agent

import (
	controlv1 "meshd/api/control/v1"
	peerv1 "meshd/api/peer/v1"
	"meshd/internal/agent/path"
	"meshd/nat/peerconn"
)

// What a peerconn session says goes to the remote peer wrapped in the
// peer-to-peer contract (api/peer/v1); nat/peerconn speaks no contract of
// its own, so the wrapping lives here.

// offerMsg starts session s at the remote peer.
func offerMsg(s *peerconn.Session) *peerv1.Message {
	c := s.Credentials()
	return &peerv1.Message{Version: peerv1.Version_VERSION_1, Body: &peerv1.Message_Offer{Offer: &peerv1.Offer{
		Kind: wireKind(s.Kind()), Session: s.ID(), Ufrag: c.Ufrag, Pwd: c.Pwd,
	}}}
}

// answerMsg accepts the remote peer's offer of session s.
func answerMsg(s *peerconn.Session) *peerv1.Message {
	c := s.Credentials()
	return &peerv1.Message{Version: peerv1.Version_VERSION_1, Body: &peerv1.Message_Answer{Answer: &peerv1.Answer{
		Kind: wireKind(s.Kind()), Session: s.ID(), Ufrag: c.Ufrag, Pwd: c.Pwd,
	}}}
}

// candidateMsg carries one local candidate (SDP) of session id.
func candidateMsg(k peerconn.Kind, id uint64, sdp string) *peerv1.Message {
	return &peerv1.Message{Version: peerv1.Version_VERSION_1, Body: &peerv1.Message_Candidate{Candidate: &peerv1.Candidate{
		Kind: wireKind(k), Session: id, Sdp: sdp,
	}}}
}

func wireKind(k peerconn.Kind) peerv1.Kind {
	if k == peerconn.Relay {
		return peerv1.Kind_KIND_RELAY
	}
	return peerv1.Kind_KIND_DIRECT
}

// iceKind is the session kind of a path kind.
func iceKind(k path.Kind) peerconn.Kind {
	if k == path.Relay {
		return peerconn.Relay
	}
	return peerconn.Direct
}

// relayServers are the map's relays as peerconn takes them.
func relayServers(rs []*controlv1.RelayServer) []peerconn.RelayServer {
	out := make([]peerconn.RelayServer, 0, len(rs))
	for _, r := range rs {
		out = append(out, peerconn.RelayServer{URLs: r.GetUrls(), Username: r.GetUsername(), Credential: r.GetCredential()})
	}
	return out
}
