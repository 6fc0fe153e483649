package agent

import (
	"time"

	"go.uber.org/zap"

	"meshd/internal/agent/path"
	"meshd/wg"
)

// A remote agent that restarted (or went down and up) has a new WireGuard
// device, without the session this side still holds. On a first join the
// side with the larger key starts the handshake as soon as its path is set,
// and the other one waits a second for it (so that two initiations do not
// cross); after the remote restarted, this side's path is not its first,
// so nothing started the handshake, and the first packet waited out the
// remote's second. The remote's new worker gives itself away: a
// controlled worker asks for its first direct session naming session 0
// (it has seen none). The controlling side then drops its old keys and
// initiates as soon as it sets each new path, until a handshake completes.

// noteRequest notes a session request from the controlled remote.
func (w *peerWorker) noteRequest(kind path.Kind, session uint64) {
	if w.controlling && kind == path.Direct && session == 0 {
		w.remoteFresh = time.Now()
		w.pq.nextStart = w.remoteFresh // a new session: a new post-quantum key
	}
}

// noteHandshake forgets a restart that a completed handshake has dealt
// with.
func (w *peerWorker) noteHandshake(hs time.Time) {
	if !w.remoteFresh.IsZero() && hs.After(w.remoteFresh) {
		w.remoteFresh = time.Time{}
	}
}

// pathSet runs after a path was given to the device.
func (w *peerWorker) pathSet() {
	if w.remoteFresh.IsZero() {
		return
	}
	rh, ok := w.env.dev.(wg.Rehandshaker)
	if !ok {
		return
	}
	if err := rh.Rehandshake(w.key, w.remoteFresh); err != nil {
		w.log.Warn("new handshake for a restarted peer", zap.Error(err))
		return
	}
	w.log.Debug("the remote restarted: new handshake on the new path")
}
