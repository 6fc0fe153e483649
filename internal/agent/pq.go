package agent

import (
	"crypto/rand"
	"errors"
	"time"

	"go.uber.org/zap"

	peerv1 "meshd/api/peer/v1"
	"meshd/internal/pqpsk"
	"meshd/wg"
)

// Post-quantum pre-shared keys (docs/post-quantum.md). Each worker runs the
// exchange of internal/pqpsk with its remote over signal: the initiator
// (the controlling side) starts one when the worker starts, when the
// remote restarted or asks, and every Rotate after the last success. The
// responder installs a new key when it has checked the initiator's proof,
// the initiator when it has the responder's; the initiator then starts a
// WireGuard handshake at once (wg.Rekeyer), which leaves the session in use
// alone. A key that sees no completed handshake within Grace is dropped for
// the previous one. The account's mode (from the map) decides what holds
// while no key is agreed: nothing in permissive mode, a random key nobody
// knows in strict mode (no handshake can complete: the peer is cut off).

// Modes of the account, as the map names them.
const (
	pqOff        = "off"
	pqPermissive = "permissive"
	pqStrict     = "strict"
)

// PQTiming tunes the post-quantum key rotation; zero fields take the
// defaults.
type PQTiming struct {
	// Rotate: a new key this long after the last (WireGuard's rekey
	// interval, 2 minutes).
	Rotate time.Duration
	// Retry: the initiator sends the last message of an exchange again
	// after this long without an answer (Attempts times in all).
	Retry    time.Duration
	Attempts int
	// Grace: a new key that sees no completed handshake for this long is
	// dropped for the previous one.
	Grace time.Duration
	// Fallback: how long an exchange may fail before status says that a
	// permissive pair runs without a key.
	Fallback time.Duration
}

func (t *PQTiming) withDefaults() PQTiming {
	d := PQTiming{Rotate: 2 * time.Minute, Retry: 2 * time.Second, Attempts: 4, Grace: 15 * time.Second, Fallback: 30 * time.Second}
	if t == nil {
		return d
	}
	o := *t
	if o.Rotate <= 0 {
		o.Rotate = d.Rotate
	}
	if o.Retry <= 0 {
		o.Retry = d.Retry
	}
	if o.Attempts <= 0 {
		o.Attempts = d.Attempts
	}
	if o.Grace <= 0 {
		o.Grace = d.Grace
	}
	if o.Fallback <= 0 {
		o.Fallback = d.Fallback
	}
	return o
}

// kernelGrace replaces Grace on a device that cannot start a handshake at
// once: its next handshake comes with WireGuard's rekey, up to two
// minutes later.
const kernelGrace = 3 * time.Minute

// pqState is a worker's post-quantum state; owned by the worker's run
// goroutine.
type pqState struct {
	timing   PQTiming
	selfOn   bool
	pair     *pqpsk.Pair
	mode     string
	remoteOn bool
	dev      wg.PresharedKeyer // nil: the device cannot set keys

	active    bool
	installed string // what the device holds: "none", "random" or "pq"
	key       pqpsk.Key
	hasKey    bool      // key is installed
	at        time.Time // when key was installed
	confirmed bool      // a handshake completed after at
	rotated   time.Time // the last agreed key
	nextStart time.Time // initiator: the next exchange
	sentAt    time.Time // the exchange in flight's last send
	sends     int
	waiting   time.Time // since when a key is wanted and none agreed
	lastReq   time.Time // responder: the last request sent; initiator: the last honoured
	lastWork  time.Time // the last exchange this side began (ML-KEM key generation)
	refused   int       // exchange starts refused since lastWork, for the log
	reason    string    // for status
}

// pqStatus is what status shows.
type pqStatus struct {
	on      bool
	rotated time.Time
	reason  string
}

// pqInit sets up the state and what the device must hold before any path.
func (w *peerWorker) pqInit(selfOn bool, timing *PQTiming, mode string, now time.Time) {
	w.pq = pqState{timing: timing.withDefaults(), selfOn: selfOn, pair: pqpsk.NewPair(w.env.self, w.key), installed: "none"}
	w.pq.dev, _ = w.env.dev.(wg.PresharedKeyer)
	w.pq.remoteOn = w.snap.meta.GetPostQuantum()
	w.pqConfigure(mode, w.pq.remoteOn, now)
}

// pqConfigure follows the map: the account's mode and whether the remote
// supports post-quantum keys.
func (w *peerWorker) pqConfigure(mode string, remoteOn bool, now time.Time) {
	q := &w.pq
	if mode != pqPermissive && mode != pqStrict {
		mode = pqOff
	}
	if q.mode != "" && mode == q.mode && remoteOn == q.remoteOn {
		return
	}
	q.mode, q.remoteOn = mode, remoteOn
	q.reason = ""
	switch {
	case mode == pqStrict && !q.selfOn:
		q.reason = "post-quantum keys are required (strict) and this agent runs with --post-quantum=false"
	case mode == pqStrict && !remoteOn:
		q.reason = "post-quantum keys are required (strict) and this peer does not support them (an older agent, or --post-quantum=false)"
	case mode == pqStrict && q.dev == nil:
		q.reason = "post-quantum keys are required (strict) and this WireGuard device cannot set pre-shared keys"
	}
	active := mode != pqOff && q.selfOn && remoteOn && q.dev != nil
	if !active {
		q.active = false
		q.pair.Forget()
		q.hasKey, q.waiting = false, time.Time{}
		w.pqSetDevice(w.pqFloor(), nil)
		if q.reason != "" {
			w.log.Warn("peer not connected", zap.String("why", q.reason))
		}
		return
	}
	if !q.hasKey {
		w.pqSetDevice(w.pqFloor(), nil)
	}
	if q.active {
		return // between permissive and strict: the exchange goes on
	}
	q.active, q.waiting = true, now
	if q.pair.Initiator() {
		q.nextStart = now
	} else {
		w.pqRequest("start", now)
	}
}

// workGap is the least time between two exchanges this side begins. Each
// costs an ML-KEM key generation (and, for the responder, an encapsulation):
// without a bound, a remote could make this side do that for every message
// signal lets through. The initiator waits half a retry interval between
// starts, the responder a quarter (room for the starts' delays to differ):
// a real exchange is never delayed by more than a retransmission.
func (q *pqState) workGap() time.Duration {
	if q.pair.Initiator() {
		return q.timing.Retry / 2
	}
	return q.timing.Retry / 4
}

// pqFloor is what the device holds without an agreed key: nothing, or in
// strict mode a random key (no handshake completes).
func (w *peerWorker) pqFloor() string {
	if w.pq.mode == pqStrict {
		return "random"
	}
	return "none"
}

// pqSetDevice installs "none", "random" or "pq" (psk).
func (w *peerWorker) pqSetDevice(what string, psk *[32]byte) {
	q := &w.pq
	if q.dev == nil || (what == q.installed && what != "pq") {
		return
	}
	var k *[32]byte
	switch what {
	case "random":
		k = new([32]byte)
		rand.Read(k[:])
	case "pq":
		k = psk
	}
	if err := q.dev.SetPresharedKey(w.key, k); err != nil {
		w.log.Warn("set pre-shared key", zap.Error(err))
		return
	}
	plain := q.installed == "none"
	q.installed = what
	if what == "random" && plain {
		// Strict now, where there was no key: a session made without one
		// may be running, and would carry traffic until it expires.
		if sd, ok := w.env.dev.(wg.SessionDropper); ok {
			if err := sd.DropSession(w.key); err != nil && !errors.Is(err, wg.ErrUnknownPeer) {
				w.log.Warn("drop the session made without a post-quantum key", zap.Error(err))
			}
		}
	}
}

func (w *peerWorker) pqSend(m *peerv1.PostQuantum) {
	w.send(&peerv1.Message{Version: peerv1.Version_VERSION_1, Body: &peerv1.Message_PostQuantum{PostQuantum: m}})
}

func (w *peerWorker) pqRequest(reason string, now time.Time) {
	w.pq.lastReq = now
	w.pqSend(w.pq.pair.Request(reason))
}

// pqStart starts an exchange (initiator). Epochs are milliseconds since
// 1970 at least, so that a restarted initiator's are larger than the
// remote remembers.
func (w *peerWorker) pqStart(now time.Time) {
	q := &w.pq
	if at := q.lastWork.Add(q.workGap()); now.Before(at) {
		q.nextStart = at
		return
	}
	epoch := max(q.pair.LastEpoch()+1, uint64(now.UnixMilli()))
	m, err := q.pair.Start(epoch)
	if err != nil {
		w.log.Warn("post-quantum exchange", zap.Error(err))
		q.nextStart = now.Add(q.timing.Rotate)
		return
	}
	q.sentAt, q.sends, q.lastWork = now, 1, now
	w.pqSend(m)
}

// pqMessage handles a PostQuantum message from the remote.
func (w *peerWorker) pqMessage(m *peerv1.PostQuantum, now time.Time) {
	q := &w.pq
	if !q.active {
		w.log.Debug("post-quantum message while post-quantum keys are off here; dropped", zap.Stringer("step", m.GetStep()))
		return
	}
	// A start of a new epoch (a retransmission repeats the last one) is
	// work; one too soon after the last is dropped: the initiator sends it
	// again after its retry interval.
	fresh := !q.pair.Initiator() && m.GetStep() == peerv1.Step_STEP_INIT && m.GetEpoch() > q.pair.LastEpoch()
	if fresh && now.Sub(q.lastWork) < q.workGap() {
		if q.refused == 0 {
			w.log.Warn("post-quantum exchange started too soon after the last; dropped (the peer retries)", zap.Uint64("epoch", m.GetEpoch()))
		}
		q.refused++
		return
	}
	out, err := q.pair.Handle(m)
	if fresh && err == nil {
		if q.refused > 1 {
			w.log.Warn("post-quantum exchange starts dropped as too frequent", zap.Int("dropped", q.refused))
		}
		q.lastWork, q.refused = now, 0
	}
	if err != nil {
		w.log.Warn("post-quantum message refused; the installed key stays", zap.Stringer("step", m.GetStep()),
			zap.Uint64("epoch", m.GetEpoch()), zap.Error(err))
		if m.GetStep() == peerv1.Step_STEP_INIT && !q.pair.Initiator() && errors.Is(err, pqpsk.ErrOldEpoch) &&
			now.Sub(q.lastReq) >= q.timing.Retry {
			// An initiator that restarted with its clock behind: the
			// request tells it where to start.
			w.pqRequest("old epoch", now)
		}
		return
	}
	if out.Send != nil {
		if q.pair.Initiator() {
			q.sentAt, q.sends = now, 1
		}
		w.pqSend(out.Send)
	}
	if out.Requested && !q.pair.InFlight() && now.Sub(q.lastReq) >= q.timing.Retry {
		q.lastReq = now
		w.log.Debug("post-quantum exchange requested", zap.String("reason", m.GetReason()))
		w.pqStart(now)
	}
	if out.Ready != nil {
		w.pqInstall(*out.Ready, now)
	}
}

func (w *peerWorker) pqInstall(k pqpsk.Key, now time.Time) {
	q := &w.pq
	w.pqSetDevice("pq", (*[32]byte)(&k.PSK))
	if q.installed != "pq" {
		return
	}
	first := !q.hasKey
	q.key, q.hasKey, q.at, q.confirmed, q.rotated, q.waiting = k, true, now, false, now, time.Time{}
	q.nextStart = now.Add(q.timing.Rotate)
	if first {
		w.log.Info("post-quantum key installed", zap.Uint64("epoch", k.Epoch))
	} else {
		w.log.Debug("post-quantum key rotated", zap.Uint64("epoch", k.Epoch)) // every 2 minutes per peer
	}
	if q.pair.Initiator() {
		w.pqRekey()
	}
}

// pqRekey starts a handshake with the new key now, keeping the session.
func (w *peerWorker) pqRekey() {
	if rk, ok := w.env.dev.(wg.Rekeyer); ok {
		if err := rk.Rekey(w.key); err != nil && !errors.Is(err, wg.ErrUnknownPeer) {
			w.log.Debug("rekey", zap.Error(err))
		}
	}
}

// pqHandshake notes a completed handshake.
func (w *peerWorker) pqHandshake(hs time.Time) {
	q := &w.pq
	if q.hasKey && !q.confirmed && hs.After(q.at) {
		q.confirmed = true
		w.log.Debug("post-quantum key confirmed by a handshake", zap.Uint64("epoch", q.key.Epoch))
	}
}

// pqTick does what is due at now and returns when it wants to run next
// (zero: nothing planned).
func (w *peerWorker) pqTick(now time.Time) time.Time {
	q := &w.pq
	if !q.active {
		return time.Time{}
	}
	t := q.timing
	var next time.Time
	soon := func(at time.Time) {
		if next.IsZero() || at.Before(next) {
			next = at
		}
	}
	// A new key no handshake confirmed: ask for one (the initiator at
	// once, the responder after a while, in case the initiator cannot),
	// and go back to the previous key when the grace ends.
	if q.hasKey && !q.confirmed {
		grace := t.Grace
		if _, ok := w.env.dev.(wg.Rekeyer); !ok {
			grace = kernelGrace
		}
		switch {
		case now.Sub(q.at) >= grace:
			w.pqRevert(now)
		default:
			if q.pair.Initiator() || now.Sub(q.at) >= t.Grace/3 {
				w.pqRekey()
			}
			soon(now.Add(time.Second))
		}
	}
	if q.pair.Initiator() {
		switch {
		case q.pair.InFlight() && now.Sub(q.sentAt) >= t.Retry:
			if q.sends >= t.Attempts {
				w.log.Warn("post-quantum exchange got no answer; trying again later", zap.Int("sends", q.sends))
				q.pair.Abort()
				if q.waiting.IsZero() {
					q.waiting = now
				}
				q.nextStart = now.Add(min(t.Rotate, 4*t.Retry*time.Duration(t.Attempts)))
			} else {
				q.sends++
				q.sentAt = now
				w.pqSend(q.pair.Resend())
			}
		case !q.pair.InFlight() && !now.Before(q.nextStart):
			w.pqStart(now)
		}
		if q.pair.InFlight() {
			soon(q.sentAt.Add(t.Retry))
		} else {
			soon(q.nextStart)
		}
	} else {
		// The responder asks when it has no key, or its key is overdue.
		due := q.rotated.Add(t.Rotate + t.Retry*time.Duration(t.Attempts+1))
		if !q.hasKey || now.After(due) {
			if q.waiting.IsZero() {
				q.waiting = now
			}
			if now.Sub(q.lastReq) >= t.Retry*time.Duration(t.Attempts) {
				w.pqRequest("no key", now)
			}
			soon(q.lastReq.Add(t.Retry * time.Duration(t.Attempts)))
		} else {
			soon(due)
		}
	}
	if !q.waiting.IsZero() {
		if now.Sub(q.waiting) >= t.Fallback {
			q.reason = w.pqFailing(now)
		} else {
			soon(q.waiting.Add(t.Fallback))
		}
	} else if q.reason != "" && q.active {
		q.reason = ""
	}
	return next
}

// pqFailing says how the pair runs while exchanges fail.
func (w *peerWorker) pqFailing(now time.Time) string {
	q := &w.pq
	d := now.Sub(q.waiting).Round(time.Second).String()
	switch {
	case q.mode == pqStrict && !q.hasKey:
		return "post-quantum key exchange with this peer failing for " + d + "; post-quantum keys are required (strict): not connected"
	case !q.hasKey:
		return "post-quantum key exchange with this peer failing for " + d + "; connected without a post-quantum key (permissive)"
	}
	return "post-quantum key rotation failing for " + d + "; the last key stays"
}

// pqRevert drops a key no handshake confirmed for the previous one.
func (w *peerWorker) pqRevert(now time.Time) {
	q := &w.pq
	bad := q.key.Epoch
	q.pair.Revert()
	if prev, ok := q.pair.Current(); ok {
		q.key, q.at, q.confirmed = prev, now, true
		w.pqSetDevice("pq", (*[32]byte)(&prev.PSK))
		w.log.Warn("no handshake completed with the new post-quantum key; back to the previous one",
			zap.Uint64("dropped", bad), zap.Uint64("epoch", prev.Epoch))
	} else {
		q.hasKey = false
		w.pqSetDevice(w.pqFloor(), nil)
		w.log.Warn("no handshake completed with the new post-quantum key; dropped", zap.Uint64("dropped", bad), zap.String("now", w.pqFloor()))
	}
	if q.waiting.IsZero() {
		q.waiting = now
	}
	if q.pair.Initiator() {
		q.nextStart = now
	}
}

// pqSnapshot is the state status shows.
func (w *peerWorker) pqSnapshot() pqStatus {
	q := &w.pq
	return pqStatus{on: q.active && q.hasKey && q.installed == "pq", rotated: q.rotated, reason: q.reason}
}
