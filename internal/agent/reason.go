package agent

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"meshd/internal/agent/path"
	"meshd/nat/peerconn"
)

// Why a peer is relayed (or still connecting) is worth saying in status:
// "relayed" alone sends people hunting. What the agent knows when a direct
// session fails is enough for the common causes: which kinds of candidate
// each side found (no server-reflexive one here, with a STUN server that
// never answered: UDP is blocked on this side; none from the remote: the
// same there; both have one and no pair worked: a NAT that maps every
// destination to a new port, or a firewall dropping unsolicited UDP).

// directDiag is what a worker keeps of its direct sessions for that.
type directDiag struct {
	session uint64   // the session remote kinds belong to
	remote  []string // kinds of candidate the remote sent for it, sorted
	why     string   // why the last direct session failed; "" while it works
}

// noteRemoteCandidate records the kind of a remote candidate of a direct
// session.
func (w *peerWorker) noteRemoteCandidate(kind path.Kind, session uint64, sdp string) {
	if kind != path.Direct {
		return
	}
	d := &w.diag
	if d.session != session {
		d.session, d.remote = session, nil
	}
	if k := candidateKind(sdp); k != "" && !slices.Contains(d.remote, k) {
		d.remote = append(d.remote, k)
		slices.Sort(d.remote)
	}
}

// noteDirect records how a direct session went: a connected one clears
// the reason, a failed one sets it. s is still open.
func (w *peerWorker) noteDirect(st peerconn.State, s *peerconn.Session) {
	switch st {
	case peerconn.Connected:
		w.diag.why = ""
	case peerconn.Disconnected, peerconn.Failed:
		var local []string
		for _, sdp := range s.Candidates() {
			if k := candidateKind(sdp); k != "" && !slices.Contains(local, k) {
				local = append(local, k)
			}
		}
		slices.Sort(local)
		remote := w.diag.remote
		if w.diag.session != s.ID() {
			remote = nil
		}
		w.diag.why = directReason(st == peerconn.Disconnected, local, remote, len(w.servers.STUN) > 0, w.stunAnswered())
	}
}

// stunAnswered reports whether any STUN server of the map answered over
// the WireGuard socket.
func (w *peerWorker) stunAnswered() bool {
	if w.env.mux == nil {
		return false
	}
	for _, u := range w.servers.STUN {
		ip, err := netip.ParseAddr(u.Host)
		if err == nil && w.env.mux.Answered(netip.AddrPortFrom(ip.Unmap(), uint16(u.Port)).String()) {
			return true
		}
	}
	return false
}

// directReason says why a direct session did not work, from the kinds of
// candidate each side had ("host", "srflx", "prflx").
func directReason(dropped bool, local, remote []string, haveSTUN, stunAnswered bool) string {
	kinds := fmt.Sprintf("candidates here: %s; from the peer: %s", orNone(local), orNone(remote))
	switch {
	case dropped:
		return "the direct path stopped answering (the network changed, or UDP is now blocked on one side)"
	case haveSTUN && !stunAnswered && !slices.Contains(local, "srflx"):
		return "UDP to the relay's STUN port gets no answer from here: UDP is blocked or filtered on this side (" + kinds + ")"
	case len(remote) == 0:
		return "the peer sent no direct candidates (it may block UDP, or be behind a NAT without a STUN answer)"
	case !slices.Contains(remote, "srflx") && !slices.Contains(remote, "prflx") && slices.Contains(local, "srflx"):
		return "the peer found no public address (UDP blocked on its side?): " + kinds
	case slices.Contains(local, "srflx") && slices.Contains(remote, "srflx"):
		return "no direct pair answered although both sides have public addresses: a NAT that maps each destination to a new port (symmetric NAT) " +
			"or a firewall that drops unsolicited UDP, on one side (" + kinds + ")"
	}
	return "ICE found no direct pair that answers (" + kinds + ")"
}

func orNone(kinds []string) string {
	if len(kinds) == 0 {
		return "none"
	}
	return strings.Join(kinds, ", ")
}

// candidateKind returns the "typ" of an ICE candidate line, one of the
// four ICE kinds or "": a remote peer wrote the line, and only a known
// word may reach status.
func candidateKind(sdp string) string {
	f := strings.Fields(sdp)
	for i := 0; i+1 < len(f); i++ {
		if f[i] == "typ" {
			switch k := f[i+1]; k {
			case "host", "srflx", "prflx", "relay":
				return k
			}
			return ""
		}
	}
	return ""
}
