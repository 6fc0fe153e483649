package agent

import (
	"go.uber.org/zap"

	"meshd/internal/agent/path"
)

// reprobeUDP runs when a session stopped answering. Once the relay's STUN
// port has answered over UDP, relay sessions allocate over TURN/UDP alone
// (each allocation costs quota on the relay); a firewall that starts
// dropping UDP under a running agent would then leave every relay session
// on a transport that cannot work. A path that stops answering is the
// sign: the mux forgets the answers, so the next relay session (which the
// path machine may start in the same step) tries TCP and TLS as well, until
// UDP answers again. A network change needs nothing here: it makes a new
// mux, which has no answers yet.
func (w *peerWorker) reprobeUDP(kind path.Kind) {
	mux := w.env.mux
	if mux == nil || len(w.servers.TURN) == 0 {
		return
	}
	w.log.Debug("a path stopped answering; the next relay session tries every transport", zap.Stringer("kind", kind))
	mux.ForgetRelayAnswers(w.servers)
}
