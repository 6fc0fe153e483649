package agent

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	controlv1 "meshd/api/control/v1"
	peerv1 "meshd/api/peer/v1"
	"meshd/internal/agent/path"
	"meshd/internal/keys"
	"meshd/nat/peerconn"
	"meshd/wg"
)

// Limits of a peer worker's queues.
const (
	peerInboxMax = 1024
	peerOutMax   = 256
	// sendTimeout bounds one message's trip to signal, including the wait
	// for the signal stream to (re)connect.
	sendTimeout = 10 * time.Second
	// relayConnWait bounds the wait for a connected relay session's conn.
	relayConnWait = 2 * time.Second
)

// peerEnv is what a worker needs from its tunnel.
type peerEnv struct {
	self            keys.Key
	dev             wg.Device
	mux             *peerconn.Mux
	signal          func() Signal // the current signal client, or nil
	includeLoopback bool
	guard           *peerconn.Guard  // read at each use: follows the maps
	timing          *peerconn.Timing // nil: defaults
	pathCfg         path.Config
	pqOff           bool      // --post-quantum=false
	pqTiming        *PQTiming // nil: defaults
	log             *zap.Logger
}

// peerWorker owns everything about one remote peer: its ICE sessions and the
// path state machine. One goroutine (run) does all the work; others hand it
// events through push.
type peerWorker struct {
	env         peerEnv
	key         keys.Key
	controlling bool
	log         *zap.Logger
	m           *path.Machine

	// Owned by run.
	sessions [2]*peerconn.Session // by path.Kind
	lastID   [2]uint64            // the last session of each kind (for requests)
	servers  peerconn.Servers
	lastHS   time.Time
	online   bool
	diag     directDiag // reason.go
	// remoteFresh: when the remote's worker was seen to be new
	// (restart.go); until a handshake completes, every path set starts a
	// new WireGuard handshake.
	remoteFresh time.Time
	// peer is the device configuration. The device starts the first
	// handshake (and the keepalive) once the peer has a path.
	peer wg.Peer

	inboxMu sync.Mutex
	inbox   []any
	notify  chan struct{}
	out     chan *peerv1.Message

	snapMu sync.Mutex
	snap   peerSnapshot

	cancel context.CancelFunc
	halted chan struct{} // closed when run stops acting (before its sessions close)
	done   chan struct{}

	pq pqState // pq.go; owned by run

	// unreachable is why signal last refused a message to the peer (nil
	// after one went through), for status.
	unreachable atomic.Pointer[string]
}

// peerSnapshot is what status shows of a worker.
type peerSnapshot struct {
	meta    *controlv1.RemotePeer
	path    path.Path
	pair    path.Pair
	healthy bool
	rtt     time.Duration
	started time.Time
	reason  string // why not direct (reason.go)
	pq      pqStatus
}

// Events a worker handles.
type (
	evMessage struct{ m *peerv1.Message }
	evSession struct {
		kind  path.Kind
		id    uint64
		state peerconn.State
		pair  peerconn.Pair
	}
	evSendFailed struct {
		kind path.Kind
		id   uint64
	}
	evStats struct{ lastHandshake time.Time }
	evMeta  struct {
		meta    *controlv1.RemotePeer
		allowed []netip.Prefix
		pqMode  string // the account's post-quantum mode
	}
	evServers struct{ servers peerconn.Servers }
	evNetwork struct {
		mux  *peerconn.Mux
		gone []netip.Addr // local addresses that went away
	}
)

// controls reports whether self is the controlling side towards remote: the
// larger public key, compared as bytes, controls.
func controls(self, remote keys.Key) bool { return bytes.Compare(self[:], remote[:]) > 0 }

func startPeer(ctx context.Context, env peerEnv, meta *controlv1.RemotePeer, cfgPeer wg.Peer, servers peerconn.Servers, pqMode string) *peerWorker {
	key := cfgPeer.PublicKey
	cfg := env.pathCfg
	cfg.Controlling = controls(env.self, key)
	cfg.HaveRelay = len(servers.TURN) > 0
	w := &peerWorker{
		env:         env,
		key:         key,
		controlling: cfg.Controlling,
		log:         env.log.With(zap.String("peer", meta.GetName()), zap.Stringer("key", key)),
		m:           path.New(cfg),
		servers:     servers,
		peer:        cfgPeer,
		online:      meta.GetOnline(),
		notify:      make(chan struct{}, 1),
		out:         make(chan *peerv1.Message, peerOutMax),
		halted:      make(chan struct{}),
		done:        make(chan struct{}),
	}
	w.snap = peerSnapshot{meta: meta, started: time.Now()}
	// Before any path: in strict mode no handshake may complete first.
	w.pqInit(!env.pqOff, env.pqTiming, pqMode, time.Now())
	ctx, w.cancel = context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); w.sender(ctx) }()
	go func() { defer wg.Done(); w.run(ctx) }()
	go func() { wg.Wait(); close(w.done) }()
	return w
}

// stop ends the worker and waits for it; its sessions are closed.
// halt makes the worker stop acting on the device and waits for that; its
// sessions may still be closing. Removing the peer from the device after
// halt cuts the tunnel at once: nothing adds it back.
func (w *peerWorker) halt() {
	w.cancel()
	<-w.halted
}

func (w *peerWorker) stop() {
	w.cancel()
	<-w.done
}

// push hands the worker an event; it never blocks.
func (w *peerWorker) push(ev any) {
	w.inboxMu.Lock()
	if len(w.inbox) >= peerInboxMax {
		w.inboxMu.Unlock()
		w.log.Warn("peer event queue full; event dropped")
		return
	}
	w.inbox = append(w.inbox, ev)
	w.inboxMu.Unlock()
	select {
	case w.notify <- struct{}{}:
	default:
	}
}

func (w *peerWorker) run(ctx context.Context) {
	defer w.closeSessions("peer removed")
	defer close(w.halted)
	w.do(ctx, w.m.Step(path.Started{At: time.Now()}))
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	var batch []any
	for {
		pqNext := w.pqTick(time.Now())
		w.publish()
		next := w.m.Next()
		if !pqNext.IsZero() && (next.IsZero() || pqNext.Before(next)) {
			next = pqNext
		}
		if !next.IsZero() {
			timer.Reset(max(time.Until(next), time.Millisecond))
		} else {
			timer.Reset(time.Hour)
		}
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
			w.do(ctx, w.m.Step(path.Tick{At: time.Now(), LastHandshake: w.lastHS}))
		case <-w.notify:
			w.inboxMu.Lock()
			batch, w.inbox = w.inbox, batch[:0]
			w.inboxMu.Unlock()
			for i, ev := range batch {
				w.handle(ctx, ev)
				batch[i] = nil
			}
		}
	}
}

func (w *peerWorker) handle(ctx context.Context, ev any) {
	now := time.Now()
	switch ev := ev.(type) {
	case evMessage:
		w.message(ctx, ev.m)
	case evSession:
		s := w.sessions[ev.kind]
		if s == nil || s.ID() != ev.id {
			return
		}
		if ev.kind == path.Direct {
			w.noteDirect(ev.state, s) // before it closes
		}
		if ev.state == peerconn.Failed || ev.state == peerconn.Closed {
			w.sessions[ev.kind] = nil
			go s.Close() // may wait on pion; never on this goroutine
		}
		if ev.state == peerconn.Disconnected || ev.state == peerconn.Failed {
			w.reprobeUDP(ev.kind)
		}
		w.do(ctx, w.m.Step(path.SessionChanged{At: now, Kind: ev.kind, Session: ev.id, State: sessionState(ev.state), Pair: pathPair(ev.pair)}))
	case evSendFailed:
		w.do(ctx, w.m.Step(path.SendFailed{At: now, Kind: ev.kind, Session: ev.id}))
	case evStats:
		if ev.lastHandshake.After(w.lastHS) {
			w.lastHS = ev.lastHandshake
		}
		w.noteHandshake(w.lastHS)
		w.pqHandshake(w.lastHS)
		w.do(ctx, w.m.Step(path.Tick{At: now, LastHandshake: w.lastHS}))
	case evMeta:
		w.snapMu.Lock()
		w.snap.meta = ev.meta
		w.snapMu.Unlock()
		if !slices.Equal(ev.allowed, w.peer.AllowedIPs) {
			w.peer.AllowedIPs = ev.allowed
			if err := w.env.dev.SetPeer(w.peer); err != nil {
				w.log.Warn("update peer", zap.Error(err))
			}
		}
		if ev.meta.GetOnline() && !w.online {
			w.do(ctx, w.m.Step(path.RemoteOnline{At: now}))
		}
		w.online = ev.meta.GetOnline()
		w.pqConfigure(ev.pqMode, ev.meta.GetPostQuantum(), now)
	case evServers:
		w.servers = ev.servers
		// TURN credentials are short-lived and come anew in every map: the
		// running relay session signs its refreshes with the newest.
		if s := w.sessions[path.Relay]; s != nil {
			s.SetTURNCredentials(ev.servers)
		}
		w.do(ctx, w.m.SetHaveRelay(now, len(ev.servers.TURN) > 0))
	case evNetwork:
		if ev.mux != nil {
			w.env.mux = ev.mux
		}
		w.do(ctx, w.m.Step(path.NetworkChanged{At: now, Gone: ev.gone}))
	}
}

// message handles one message from the remote peer.
func (w *peerWorker) message(ctx context.Context, m *peerv1.Message) {
	if m.GetVersion() > peerv1.Version_VERSION_1 {
		w.log.Warn("peer speaks a newer protocol version; message dropped (upgrade this agent)", zap.Int32("version", int32(m.GetVersion())))
		return
	}
	now := time.Now()
	switch b := m.Body.(type) {
	case *peerv1.Message_Offer:
		kind, ok := pathKind(b.Offer.GetKind())
		if !ok || w.controlling {
			return // only the controlling side offers
		}
		if old := w.sessions[kind]; old != nil {
			if old.ID() == b.Offer.GetSession() {
				w.send(answerMsg(old)) // a repeated offer: answer again
				return
			}
			w.sessions[kind] = nil
			go old.Close()
		}
		s, err := w.newSession(kind, b.Offer.GetSession())
		if err != nil {
			w.log.Warn("cannot accept session", zap.Stringer("kind", kind), zap.Error(err))
			w.send(closeMsg(b.Offer.GetKind(), b.Offer.GetSession(), err.Error()))
			return
		}
		w.sessions[kind] = s
		w.lastID[kind] = s.ID()
		w.send(answerMsg(s))
		w.do(ctx, w.m.Step(path.SessionStarted{At: now, Kind: kind, Session: s.ID()}))
		if err := s.Gather(); err != nil {
			w.log.Warn("gather", zap.Error(err))
		}
		if err := s.Connect(b.Offer.GetUfrag(), b.Offer.GetPwd()); err != nil {
			w.log.Warn("connect", zap.Error(err))
		}
	case *peerv1.Message_Answer:
		kind, ok := pathKind(b.Answer.GetKind())
		if s := w.current(kind, b.Answer.GetSession()); ok && s != nil && w.controlling {
			if err := s.Connect(b.Answer.GetUfrag(), b.Answer.GetPwd()); err != nil {
				w.log.Warn("connect", zap.Error(err))
			}
			w.do(ctx, w.m.Step(path.Answered{At: now, Kind: kind, Session: s.ID()}))
		}
	case *peerv1.Message_Candidate:
		kind, ok := pathKind(b.Candidate.GetKind())
		if s := w.current(kind, b.Candidate.GetSession()); ok && s != nil {
			if err := s.AddCandidate(b.Candidate.GetSdp()); err != nil {
				w.log.Debug("remote candidate refused", zap.Error(err))
			} else {
				w.noteRemoteCandidate(kind, s.ID(), b.Candidate.GetSdp())
			}
		}
	case *peerv1.Message_Request:
		if kind, ok := pathKind(b.Request.GetKind()); ok {
			w.noteRequest(kind, b.Request.GetSession())
			w.do(ctx, w.m.Step(path.RemoteRequest{At: now, Kind: kind, Session: b.Request.GetSession()}))
		}
	case *peerv1.Message_PostQuantum:
		w.pqMessage(b.PostQuantum, now)
	case *peerv1.Message_Close:
		kind, ok := pathKind(b.Close.GetKind())
		if s := w.current(kind, b.Close.GetSession()); ok && s != nil {
			w.log.Debug("remote closed session", zap.Stringer("kind", kind), zap.String("reason", b.Close.GetReason()))
			w.sessions[kind] = nil
			go s.Close()
			w.do(ctx, w.m.Step(path.SessionChanged{At: now, Kind: kind, Session: s.ID(), State: path.Closed}))
		}
	}
}

func (w *peerWorker) current(kind path.Kind, id uint64) *peerconn.Session {
	if kind != path.Direct && kind != path.Relay {
		return nil
	}
	if s := w.sessions[kind]; s != nil && s.ID() == id {
		return s
	}
	return nil
}

func (w *peerWorker) newSession(kind path.Kind, id uint64) (*peerconn.Session, error) {
	ik := iceKind(kind)
	return peerconn.New(peerconn.Config{
		Kind:            ik,
		ID:              id,
		Controlling:     w.controlling,
		Mux:             w.env.mux,
		Servers:         w.servers,
		IncludeLoopback: w.env.includeLoopback,
		Guard:           w.env.guard,
		Timing:          w.env.timing,
		Log:             w.log.Named("ice"),
		OnCandidate:     func(sdp string) { w.send(candidateMsg(ik, id, sdp)) },
		OnState: func(st peerconn.State, p peerconn.Pair) {
			w.push(evSession{kind: kind, id: id, state: st, pair: p})
		},
	})
}

// do carries out the machine's actions.
func (w *peerWorker) do(ctx context.Context, acts []path.Action) {
	for _, a := range acts {
		w.log.Debug("path action", zap.Stringer("action", a))
		switch a.Type {
		case path.ActionStart:
			if !w.controlling {
				last := w.lastID[a.Kind]
				w.send(&peerv1.Message{Version: peerv1.Version_VERSION_1, Body: &peerv1.Message_Request{Request: &peerv1.Request{
					Kind: peerKind(a.Kind), Session: last, Reason: a.Reason,
				}}})
				continue
			}
			if old := w.sessions[a.Kind]; old != nil {
				w.sessions[a.Kind] = nil
				go old.Close()
			}
			id := randomID()
			s, err := w.newSession(a.Kind, id)
			if err != nil {
				w.log.Warn("cannot start session", zap.Stringer("kind", a.Kind), zap.Error(err))
				w.do(ctx, w.m.Step(path.SessionStarted{At: time.Now(), Kind: a.Kind, Session: id}))
				w.do(ctx, w.m.Step(path.SessionChanged{At: time.Now(), Kind: a.Kind, Session: id, State: path.Failed}))
				continue
			}
			w.sessions[a.Kind] = s
			w.lastID[a.Kind] = id
			w.send(offerMsg(s))
			if err := s.Gather(); err != nil {
				w.log.Warn("gather", zap.Error(err))
			}
			w.do(ctx, w.m.Step(path.SessionStarted{At: time.Now(), Kind: a.Kind, Session: id}))
		case path.ActionResend:
			if s := w.sessions[a.Kind]; s != nil && s.ID() == a.Session {
				w.send(offerMsg(s))
				for _, c := range s.Candidates() {
					w.send(candidateMsg(s.Kind(), s.ID(), c))
				}
			}
		case path.ActionStop:
			if s := w.sessions[a.Kind]; s != nil {
				w.sessions[a.Kind] = nil
				w.send(closeMsg(peerKind(a.Kind), s.ID(), a.Reason))
				go s.Close()
			}
		case path.ActionSetDirect:
			ap, err := peerconn.RemoteAddrPort(peerconn.Candidate(a.Pair.Remote))
			if err == nil {
				err = w.env.dev.SetDirect(w.key, ap)
			}
			if err != nil {
				w.log.Warn("set direct path", zap.Error(err))
				continue
			}
			w.log.Info("path direct", zap.String("local", a.Pair.Local.String()), zap.String("remote", a.Pair.Remote.String()))
			w.pathSet()
		case path.ActionSetRelayed:
			s := w.sessions[path.Relay]
			if s == nil || s.ID() != a.Session {
				continue
			}
			cctx, cancel := context.WithTimeout(ctx, relayConnWait)
			c, err := s.WaitConn(cctx)
			cancel()
			if err == nil {
				err = w.env.dev.SetRelayed(w.key, c)
			}
			if err != nil {
				w.log.Warn("set relayed path", zap.Error(err))
				continue
			}
			w.log.Info("path relayed", zap.String("local", a.Pair.Local.String()), zap.String("remote", a.Pair.Remote.String()))
			w.pathSet()
		}
	}
}

// publish updates the snapshot status reads.
func (w *peerWorker) publish() {
	p, pair := w.m.Path()
	var rtt time.Duration
	switch p {
	case path.PathDirect:
		if s := w.sessions[path.Direct]; s != nil {
			rtt = s.RTT()
		}
	case path.PathRelayed:
		if s := w.sessions[path.Relay]; s != nil {
			rtt = s.RTT() // through the relay, over TURN/UDP
		}
	}
	reason := ""
	if p != path.PathDirect {
		reason = w.diag.why
	}
	w.snapMu.Lock()
	w.snap.path, w.snap.pair, w.snap.rtt, w.snap.reason = p, pair, rtt, reason
	w.snap.healthy = w.m.Healthy(time.Now())
	w.snap.pq = w.pqSnapshot()
	w.snapMu.Unlock()
}

func (w *peerWorker) snapshot() peerSnapshot {
	w.snapMu.Lock()
	defer w.snapMu.Unlock()
	return w.snap
}

func (w *peerWorker) closeSessions(reason string) {
	for k, s := range w.sessions {
		if s != nil {
			w.sessions[k] = nil
			s.Close()
		}
	}
}

// send queues a message for the remote peer; it never blocks (a full queue
// drops the message: ICE and the path machine retry).
func (w *peerWorker) send(m *peerv1.Message) {
	select {
	case w.out <- m:
	default:
		w.log.Warn("peer send queue full; message dropped")
	}
}

// sender delivers queued messages in order through signal.
func (w *peerWorker) sender(ctx context.Context) {
	for {
		var m *peerv1.Message
		select {
		case <-ctx.Done():
			return
		case m = <-w.out:
		}
		b, err := proto.Marshal(m)
		if err != nil {
			w.log.Error("marshal peer message", zap.Error(err))
			continue
		}
		sctx, cancel := context.WithTimeout(ctx, sendTimeout)
		err = w.sendOne(sctx, b)
		cancel()
		switch {
		case err == nil:
			w.unreachable.Store(nil)
		case errors.Is(err, ErrPeerOffline):
			why := err.Error()
			w.unreachable.Store(&why)
		}
		if err == nil || ctx.Err() != nil {
			continue
		}
		w.log.Debug("peer message not delivered", zap.Error(err))
		var kind peerv1.Kind
		var id uint64
		switch b := m.Body.(type) {
		case *peerv1.Message_Offer:
			kind, id = b.Offer.GetKind(), b.Offer.GetSession()
		case *peerv1.Message_Request:
			kind = b.Request.GetKind()
		default:
			continue
		}
		if k, ok := pathKind(kind); ok {
			w.push(evSendFailed{kind: k, id: id})
		}
	}
}

func (w *peerWorker) sendOne(ctx context.Context, b []byte) error {
	sig := w.env.signal()
	for sig == nil {
		// No signal client yet (the map has none, or it is being replaced).
		select {
		case <-ctx.Done():
			return errors.New("no signal server")
		case <-time.After(10 * time.Millisecond):
		}
		sig = w.env.signal()
	}
	if err := sig.WaitConnected(ctx); err != nil {
		return err
	}
	return sig.Send(ctx, w.key, b)
}

func closeMsg(kind peerv1.Kind, id uint64, reason string) *peerv1.Message {
	return &peerv1.Message{Version: peerv1.Version_VERSION_1, Body: &peerv1.Message_Close{Close: &peerv1.Close{
		Kind: kind, Session: id, Reason: reason,
	}}}
}

func randomID() uint64 {
	var b [8]byte
	for {
		if _, err := rand.Read(b[:]); err != nil {
			panic("agent: crypto/rand failed: " + err.Error())
		}
		if id := binary.BigEndian.Uint64(b[:]); id != 0 {
			return id
		}
	}
}

func pathKind(k peerv1.Kind) (path.Kind, bool) {
	switch k {
	case peerv1.Kind_KIND_DIRECT:
		return path.Direct, true
	case peerv1.Kind_KIND_RELAY:
		return path.Relay, true
	}
	return 0, false
}

func peerKind(k path.Kind) peerv1.Kind {
	if k == path.Relay {
		return peerv1.Kind_KIND_RELAY
	}
	return peerv1.Kind_KIND_DIRECT
}

func sessionState(s peerconn.State) path.SessionState {
	switch s {
	case peerconn.Connected:
		return path.Connected
	case peerconn.Disconnected:
		return path.Disconnected
	case peerconn.Failed:
		return path.Failed
	case peerconn.Closed:
		return path.Closed
	}
	return path.Checking
}

func pathPair(p peerconn.Pair) path.Pair {
	return path.Pair{Local: path.Candidate(p.Local), Remote: path.Candidate(p.Remote)}
}

// parsePrefixes reads allowed IPs; bad ones are skipped and reported.
func parsePrefixes(ss []string) ([]netip.Prefix, error) {
	out := make([]netip.Prefix, 0, len(ss))
	var firstErr error
	for _, s := range ss {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			if a, aerr := netip.ParseAddr(s); aerr == nil {
				p, err = a.Prefix(a.BitLen())
			}
		}
		if err != nil {
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		out = append(out, p.Masked())
	}
	return out, firstErr
}
