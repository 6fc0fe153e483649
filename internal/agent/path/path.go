// Package path decides, for one remote peer, how WireGuard packets travel:
// straight from the WireGuard socket (direct) or through a TURN relay, and
// when the ICE sessions that find those paths start, stop and restart.
//
// Machine is a synchronous state machine in the style of etcd's raft: it does
// no I/O and reads no clock. The agent's per-peer worker feeds it events
// (an ICE session connected with a candidate pair, failed, a timer tick with
// the WireGuard handshake time) and carries out the actions it returns (set
// the direct path, set the relayed path, start or stop a session). Everything
// time-dependent comes in as `at time.Time`, so tests drive it without
// sleeping. Only internal/agent imports it.
//
// The rules:
//   - A direct path always wins: when the direct session connects, the path
//     becomes direct, even if it was relayed.
//   - The relay is used only while no direct path works. Both sessions start
//     together (relay first for the first packet, never waiting for ICE);
//     once the direct path works and stayed up for RelayLinger, the
//     controlling side closes the relay session. The direct path works
//     when it carried a WireGuard handshake, or when WireGuard's session
//     is live (a handshake made over the relay carries on over the new
//     endpoint) and the direct session that found the path is connected.
//   - While relayed, the direct session keeps being retried with backoff, and
//     the path upgrades as soon as it connects.
//   - A failed session restarts with exponential backoff; a network change
//     restarts the direct session at once.
//   - A working direct path is kept while a new direct session looks for a
//     better one (a network change that left the path's local address in
//     place, or the remote peer asking for or offering a new session): the
//     path is "held" until the new session connects (its pair becomes the
//     path) or fails (then the relay takes over). Neither side drops the
//     path nor starts a relay for the restart itself.
//   - The WireGuard handshake watchdog: a path that has not carried a first
//     handshake within HandshakeTimeout, or whose last handshake is older
//     than HandshakeStale (WireGuard re-handshakes every two minutes while
//     keepalives flow), is dead and is replaced. A path set while WireGuard
//     still has a live session (a recent handshake) does not need a
//     handshake of its own: WireGuard keeps its keys across a change of
//     endpoint and rekeys on its own schedule, not because the path changed.
//
// Only the controlling peer (the larger public key) creates sessions; the
// controlled peer asks it for one with a Request message. Machine takes that
// into account: for a controlled peer, ActionStart means "send a request".
package path

import (
	"fmt"
	"net/netip"
	"time"
)

// Kind names one of the two ICE sessions between a pair of peers.
type Kind int

const (
	// Direct finds a path without a relay (host, srflx, prflx candidates on
	// the WireGuard socket).
	Direct Kind = iota
	// Relay uses TURN relay candidates only.
	Relay
)

func (k Kind) String() string {
	if k == Direct {
		return "direct"
	}
	return "relay"
}

// Candidate is one end of an ICE candidate pair.
type Candidate struct {
	Type    string // host, srflx, prflx, relay
	Address string // ip:port
}

func (c Candidate) String() string { return c.Type + " " + c.Address }

// Pair is the candidate pair ICE selected.
type Pair struct {
	Local, Remote Candidate
}

func (p Pair) String() string { return p.Local.String() + " -> " + p.Remote.String() }

// SessionState is what an ICE session reports.
type SessionState int

const (
	// Checking: the session runs and looks for a pair.
	Checking SessionState = iota
	// Connected: a pair is selected (Pair is set).
	Connected
	// Disconnected: the selected pair stopped answering; it may recover.
	Disconnected
	// Failed: the session gave up; it needs a restart.
	Failed
	// Closed: the session was closed on purpose (by us or by the remote);
	// no backoff.
	Closed
)

func (s SessionState) String() string {
	return [...]string{"checking", "connected", "disconnected", "failed", "closed"}[s]
}

// Path is how packets to the peer travel now.
type Path int

const (
	// None: no path was set yet (or the last one died).
	None Path = iota
	// PathDirect: from the WireGuard socket to a remote address.
	PathDirect
	// PathRelayed: through the relay session's connection.
	PathRelayed
)

func (p Path) String() string {
	return [...]string{"none", "direct", "relayed"}[p]
}

// Config tunes a Machine. Zero durations take the defaults below.
type Config struct {
	// Controlling is true on the peer with the larger public key.
	Controlling bool
	// HaveRelay is false when the network map lists no TURN server: then the
	// relay session is never started.
	HaveRelay bool
	// HandshakeTimeout: a path that carried no handshake this long after it
	// was set is dead.
	HandshakeTimeout time.Duration
	// HandshakeStale: a last handshake older than this means the path is dead.
	HandshakeStale time.Duration
	// RelayLinger: how long the direct path must have been up and working
	// (a WireGuard handshake over it, or a live WireGuard session and a
	// connected direct session) before the controlling side closes the
	// relay session.
	RelayLinger time.Duration
	// RelayDelay is the direct session's head start: the relay session
	// starts only if no direct path works this long after the peer appeared
	// (or at once when the direct session fails). A direct path usually
	// connects within tens of milliseconds, so most pairs never allocate a
	// relay. Negative: relay first, at once.
	RelayDelay time.Duration
	// BackoffMin and BackoffMax bound the restart delay of a failed session.
	BackoffMin, BackoffMax time.Duration
	// RequestTimeout: a controlled peer that asked for a session and got no
	// offer in this time counts the attempt as failed.
	RequestTimeout time.Duration
	// RestartMinInterval rate-limits restarts asked for by the remote peer.
	RestartMinInterval time.Duration
	// Jitter spreads a backoff delay (e.g. ±20%); nil means none.
	Jitter func(time.Duration) time.Duration
}

// Defaults of Config.
const (
	DefaultHandshakeTimeout   = 20 * time.Second
	DefaultHandshakeStale     = 3*time.Minute + 15*time.Second
	DefaultRelayLinger        = 30 * time.Second
	DefaultRelayDelay         = 500 * time.Millisecond
	DefaultBackoffMin         = time.Second
	DefaultBackoffMax         = 30 * time.Second
	DefaultRequestTimeout     = 5 * time.Second
	DefaultRestartMinInterval = time.Second
)

func (c *Config) setDefaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.HandshakeTimeout, DefaultHandshakeTimeout)
	def(&c.HandshakeStale, DefaultHandshakeStale)
	def(&c.RelayLinger, DefaultRelayLinger)
	switch {
	case c.RelayDelay == 0:
		c.RelayDelay = DefaultRelayDelay
	case c.RelayDelay < 0:
		c.RelayDelay = 0
	}
	def(&c.BackoffMin, DefaultBackoffMin)
	def(&c.BackoffMax, DefaultBackoffMax)
	def(&c.RequestTimeout, DefaultRequestTimeout)
	def(&c.RestartMinInterval, DefaultRestartMinInterval)
	if c.Jitter == nil {
		c.Jitter = func(d time.Duration) time.Duration { return d }
	}
}

// ActionType is what the worker must do.
type ActionType int

const (
	// ActionStart starts a session of Kind: the controlling peer creates one
	// and offers it; the controlled peer sends a Request.
	ActionStart ActionType = iota
	// ActionStop closes the session Kind/Session and tells the remote.
	ActionStop
	// ActionSetDirect sends WireGuard packets to Pair.Remote from the
	// WireGuard socket.
	ActionSetDirect
	// ActionSetRelayed sends WireGuard packets through relay session Session.
	ActionSetRelayed
	// ActionResend sends the offer (and the local candidates) of session
	// Kind/Session again.
	ActionResend
)

// Action is one thing the worker must do, in order.
type Action struct {
	Type    ActionType
	Kind    Kind
	Session uint64
	Pair    Pair
	Reason  string
}

func (a Action) String() string {
	switch a.Type {
	case ActionStart:
		return fmt.Sprintf("start %s (%s)", a.Kind, a.Reason)
	case ActionStop:
		return fmt.Sprintf("stop %s %d (%s)", a.Kind, a.Session, a.Reason)
	case ActionSetDirect:
		return fmt.Sprintf("set direct %d %s", a.Session, a.Pair)
	case ActionResend:
		return fmt.Sprintf("resend %s %d (%s)", a.Kind, a.Session, a.Reason)
	default:
		return fmt.Sprintf("set relayed %d %s", a.Session, a.Pair)
	}
}

// session is the machine's view of one kind of session.
type session struct {
	kind    Kind
	running bool   // a session exists (controlling) or was offered (controlled)
	id      uint64 // current session id; 0 before SessionStarted
	// answered (controlling side): the remote answered the offer.
	answered bool
	up       bool
	pair     Pair
	// requested (controlled side): a Request was sent at this time and no
	// offer arrived yet.
	requested time.Time
	nextStart time.Time // earliest (re)start; zero: now
	// awaitOffer (controlled side): the remote closed the session; expect
	// its new offer until then before asking.
	awaitOffer  time.Time
	backoff     time.Duration
	lastStarted time.Time
	// why is the reason of the next start, when not the usual one.
	why string
}

// Machine is the path state machine of one peer. It is not safe for
// concurrent use: one worker goroutine owns it.
type Machine struct {
	cfg     Config
	started bool
	direct  session
	relay   session

	path      Path
	pathPair  Pair
	pathID    uint64
	pathSince time.Time // when the current path was set
	// held: the path is direct but the session that found it was replaced
	// on purpose; it stays until the current direct session connects or
	// fails (see hold).
	held bool
	// epoch is when a path was first set after the last death; the watchdog
	// expects a handshake after it.
	epoch         time.Time
	lastHandshake time.Time
	directGood    time.Time // since when the direct path is known to work (see watchdog)
	// relayAfter: no relay session before then, unless the direct session
	// failed (Config.RelayDelay).
	relayAfter time.Time
}

// New returns a machine; nothing happens until Step(Started{...}).
func New(cfg Config) *Machine {
	cfg.setDefaults()
	m := &Machine{cfg: cfg}
	m.direct = session{kind: Direct, backoff: cfg.BackoffMin}
	m.relay = session{kind: Relay, backoff: cfg.BackoffMin}
	return m
}

// SetHaveRelay updates whether TURN servers exist (a new map may add or
// remove them). Without relays the relay session is closed.
func (m *Machine) SetHaveRelay(at time.Time, have bool) []Action {
	m.cfg.HaveRelay = have
	return m.decide(at, nil)
}

// Path returns the current path and, for a set path, its pair.
func (m *Machine) Path() (Path, Pair) { return m.path, m.pathPair }

// LastHandshake returns the last handshake time the machine saw.
func (m *Machine) LastHandshake() time.Time { return m.lastHandshake }

// Healthy reports whether a path is set and carried a handshake recently.
func (m *Machine) Healthy(at time.Time) bool {
	return m.path != None && !m.lastHandshake.IsZero() && !m.lastHandshake.Before(m.epoch) &&
		at.Sub(m.lastHandshake) < m.cfg.HandshakeStale
}

// Session returns the current id and state of a kind of session.
func (m *Machine) Session(k Kind) (id uint64, running, up bool) {
	s := m.sess(k)
	return s.id, s.running, s.up
}

func (m *Machine) sess(k Kind) *session {
	if k == Direct {
		return &m.direct
	}
	return &m.relay
}

// Next returns when the machine next needs a Tick even if nothing happens
// (a scheduled restart, the relay linger, the watchdog); zero when it waits
// only for events.
func (m *Machine) Next() time.Time {
	var next time.Time
	earliest := func(t time.Time) {
		if !t.IsZero() && (next.IsZero() || t.Before(next)) {
			next = t
		}
	}
	if !m.started {
		return next
	}
	for _, s := range []*session{&m.direct, &m.relay} {
		if !s.running && m.wants(s.kind, s.nextStart) {
			earliest(s.nextStart)
			earliest(s.awaitOffer)
		}
		if !s.requested.IsZero() {
			earliest(s.requested.Add(m.cfg.RequestTimeout))
		}
	}
	if !m.relay.running && !m.directWorks() && m.cfg.HaveRelay {
		earliest(m.relayAfter)
	}
	if m.relay.running && !m.directGood.IsZero() {
		earliest(m.directGood.Add(m.cfg.RelayLinger))
	}
	if m.path != None {
		if m.lastHandshake.IsZero() || m.lastHandshake.Before(m.epoch) {
			earliest(m.epoch.Add(m.cfg.HandshakeTimeout))
		} else {
			earliest(m.lastHandshake.Add(m.cfg.HandshakeStale))
		}
	}
	return next
}

// Step feeds one event and returns the actions to carry out, in order.
func (m *Machine) Step(e Event) []Action {
	at := e.at()
	var acts []Action
	switch e := e.(type) {
	case Started:
		m.started = true
		m.relayAfter = at.Add(m.cfg.RelayDelay)
	case SessionStarted:
		s := m.sess(e.Kind)
		if s.running && s.id != 0 && s.id != e.Session && s.up {
			// A new session replaces one that worked (the remote's network
			// changed, or it restarted): a direct path is held until the
			// new session connects or fails; a relayed one goes with its
			// session.
			if !m.hold(s) {
				m.sessionGone(s, at)
			}
		}
		s.running, s.id, s.up, s.requested, s.awaitOffer = true, e.Session, false, time.Time{}, time.Time{}
		s.answered = !m.cfg.Controlling // the controlled side answered it itself
		s.lastStarted = at
	case SessionChanged:
		s := m.sess(e.Kind)
		if !s.running || s.id != e.Session {
			return nil
		}
		acts = m.sessionChanged(s, e, at, acts)
	case Tick:
		if e.LastHandshake.After(m.lastHandshake) {
			m.lastHandshake = e.LastHandshake
		}
		acts = m.watchdog(at, acts)
	case NetworkChanged:
		// The direct session gets its head start again before a relay.
		m.relayAfter = at.Add(m.cfg.RelayDelay)
		if m.path == PathDirect && !lostLocal(m.pathPair.Local, e.Gone) && m.hold(&m.direct) {
			// The path's local address is still there: keep the path while
			// a new session looks for a better one on the new addresses.
			m.replace(&m.direct, "network changed")
		} else {
			acts = m.restart(&m.direct, at, "network changed", acts)
		}
		m.direct.backoff = m.cfg.BackoffMin
		if m.relay.running && m.path == PathRelayed {
			acts = m.restart(&m.relay, at, "network changed", acts)
			m.relay.backoff = m.cfg.BackoffMin
		}
	case RemoteRequest:
		if !m.cfg.Controlling {
			return nil
		}
		s := m.sess(e.Kind)
		if e.Kind == Relay && !m.cfg.HaveRelay {
			return nil
		}
		s.backoff = m.cfg.BackoffMin
		switch {
		case !s.running:
			// Nothing runs (the remote just came online): start now.
			s.nextStart = time.Time{}
		case e.Session == s.id:
			// The remote has our session and wants a new one (its network
			// changed, or its end failed): restart, rate limited. A direct
			// path that works for us is held meanwhile; the new offer tells
			// the remote that the old session is over.
			if m.hold(s) {
				m.replace(s, "remote asked for a new session")
			} else {
				acts = m.stop(s, at, "remote asked for a new session", acts)
			}
			s.nextStart = s.lastStarted.Add(m.cfg.RestartMinInterval)
		case !s.answered:
			// Our offer is not answered yet: the request crossed it, or the
			// offer was lost. Send it again instead of starting over.
			acts = append(acts, Action{Type: ActionResend, Kind: s.kind, Session: s.id, Reason: "remote asked before answering"})
			return m.decide(at, acts)
		default:
			// The remote does not know our session (it restarted): start
			// over at once.
			acts = m.stop(s, at, "remote lost the session", acts)
			s.nextStart = time.Time{}
		}
		if e.Kind == Relay {
			// The remote lacks a path: keep the relay, even over a direct path
			// that works for us.
			m.directGood = time.Time{}
		}
		acts = m.decide(at, acts)
		return acts
	case Answered:
		if sess := m.sess(e.Kind); sess.running && sess.id == e.Session {
			sess.answered = true
		}
	case SendFailed:
		sess := m.sess(e.Kind)
		switch {
		case m.cfg.Controlling && sess.running && sess.id == e.Session:
			// An offer that did not reach the remote says nothing about a
			// held path: WireGuard keeps using it without signal.
			sess.running, sess.up = false, false
			if !m.held || sess.kind != Direct {
				m.sessionGone(sess, at)
			}
			m.scheduleRetry(sess, at)
		case !m.cfg.Controlling && !sess.requested.IsZero():
			sess.requested = time.Time{}
			m.scheduleRetry(sess, at)
		}
	case RemoteOnline:
		for _, s := range []*session{&m.direct, &m.relay} {
			s.backoff = m.cfg.BackoffMin
			if !s.running {
				s.nextStart = time.Time{}
			}
		}
	}
	return m.decide(at, acts)
}

func (m *Machine) sessionChanged(s *session, e SessionChanged, at time.Time, acts []Action) []Action {
	switch e.State {
	case Checking:
	case Connected:
		s.up, s.pair = true, e.Pair
		s.backoff = m.cfg.BackoffMin
	case Disconnected:
		if s.up {
			m.sessionGone(s, at)
		}
		s.up = false
		m.directLost(s, at)
	case Failed:
		s.running, s.up = false, false
		m.sessionGone(s, at)
		m.scheduleRetry(s, at)
		m.directLost(s, at)
	case Closed:
		s.running, s.up = false, false
		m.sessionGone(s, at)
		s.nextStart = s.lastStarted.Add(m.cfg.RestartMinInterval)
		if !m.cfg.Controlling {
			// The controlling peer closed it and offers again if it wants
			// to; ask only if no offer comes.
			s.awaitOffer = at.Add(m.cfg.RequestTimeout)
		}
	}
	return acts
}

// directLost ends the direct session's head start: it failed or dropped,
// so the relay is needed now.
func (m *Machine) directLost(s *session, at time.Time) {
	if s.kind == Direct && at.Before(m.relayAfter) {
		m.relayAfter = at
	}
}

// sessionGone forgets a path that ran over s. A held direct path goes with
// any direct session that ends: the session that was to confirm or replace
// it did not work.
func (m *Machine) sessionGone(s *session, at time.Time) {
	if (s.kind == Direct && m.path == PathDirect) || (s.kind == Relay && m.path == PathRelayed) {
		if m.pathID == s.id || (s.kind == Direct && m.held) {
			m.clearPath()
		}
	}
	if s.kind == Direct {
		m.directGood = time.Time{}
	}
}

func (m *Machine) clearPath() {
	m.path, m.pathPair, m.pathID, m.held = None, Pair{}, 0, false
}

// hold keeps the direct path that runs over s (up) while s is replaced,
// and reports whether there was one to keep (or one is held already).
func (m *Machine) hold(s *session) bool {
	if s.kind != Direct || m.path != PathDirect {
		return false
	}
	if m.held {
		return true
	}
	if !s.up || m.pathID != s.id {
		return false
	}
	m.held = true
	return true
}

// replace ends s without telling the remote (the next offer, or our
// request naming s, does) and without forgetting a held path; decide starts
// the next session. The worker closes the old session when it starts the
// new one.
func (m *Machine) replace(s *session, reason string) {
	s.running, s.up, s.answered = false, false, false
	s.requested, s.awaitOffer, s.nextStart = time.Time{}, time.Time{}, time.Time{}
	s.why = reason + "; the path stays meanwhile"
}

// lostLocal reports whether the local end of a path used an address in
// gone. The base of a server-reflexive (or unknown) candidate is not known:
// any gone address of its family counts.
func lostLocal(local Candidate, gone []netip.Addr) bool {
	if len(gone) == 0 {
		return false
	}
	ap, err := netip.ParseAddrPort(local.Address)
	if err != nil {
		return true
	}
	ip := ap.Addr().Unmap()
	for _, g := range gone {
		g = g.Unmap()
		if g == ip || (local.Type != "host" && g.Is4() == ip.Is4()) {
			return true
		}
	}
	return false
}

func (m *Machine) scheduleRetry(s *session, at time.Time) {
	s.nextStart = at.Add(m.cfg.Jitter(s.backoff))
	s.backoff *= 2
	if s.backoff > m.cfg.BackoffMax {
		s.backoff = m.cfg.BackoffMax
	}
}

// watchdog checks the WireGuard handshake of the current path.
func (m *Machine) watchdog(at time.Time, acts []Action) []Action {
	if m.path == None {
		return acts
	}
	hs := m.lastHandshake
	fresh := !hs.IsZero() && !hs.Before(m.epoch)
	var reason string
	switch {
	case !fresh && at.Sub(m.epoch) >= m.cfg.HandshakeTimeout:
		reason = fmt.Sprintf("no wireguard handshake %s after the path was set", m.cfg.HandshakeTimeout)
	case fresh && at.Sub(hs) >= m.cfg.HandshakeStale:
		reason = fmt.Sprintf("last wireguard handshake %s ago", at.Sub(hs).Round(time.Second))
	}
	// The direct path is good once it carried a handshake of its own, or
	// once the direct session confirms it while WireGuard has a live
	// session. A handshake made before the switch went over the relay, and
	// WireGuard makes no new one for a change of endpoint (it keeps its
	// keys and rekeys two minutes after the last handshake, or never on a
	// quiet tunnel): waiting for one kept relay sessions open for minutes.
	// The direct session's checks run from the WireGuard socket to the
	// address WireGuard now sends to, every second, and it reports
	// Disconnected within seconds when they stop being answered (which
	// resets directGood, so the relay stays). A path that passes those
	// checks but not WireGuard's packets is still caught by the stale
	// check, and the relay restarted.
	if m.path == PathDirect && fresh && at.Sub(hs) < m.cfg.HandshakeStale && m.directGood.IsZero() &&
		(!hs.Before(m.pathSince) || m.directConfirmed()) {
		m.directGood = at
	}
	if reason == "" {
		return acts
	}
	// The path is dead: fail the session under it and start over.
	s := &m.direct
	if m.path == PathRelayed {
		s = &m.relay
	}
	acts = m.stop(s, at, reason, acts)
	m.scheduleRetry(s, at)
	m.clearPath()
	m.epoch = time.Time{}
	return acts
}

// stop closes a running session.
func (m *Machine) stop(s *session, at time.Time, reason string, acts []Action) []Action {
	if !s.running {
		return acts
	}
	acts = append(acts, Action{Type: ActionStop, Kind: s.kind, Session: s.id, Reason: reason})
	s.running, s.up = false, false
	s.requested = time.Time{}
	m.sessionGone(s, at)
	return acts
}

// restart stops s (if running) and starts it again now.
func (m *Machine) restart(s *session, at time.Time, reason string, acts []Action) []Action {
	acts = m.stop(s, at, reason, acts)
	s.nextStart = time.Time{}
	return acts
}

// directConfirmed reports whether the direct path is the pair of the
// current direct session and that session is up (its connectivity checks
// are answered); a held path is not.
func (m *Machine) directConfirmed() bool {
	return m.path == PathDirect && !m.held && m.direct.up && m.direct.id == m.pathID && m.direct.pair == m.pathPair
}

// directWorks reports whether a direct path works: the direct session is
// up, or a direct path is held while its next session checks.
func (m *Machine) directWorks() bool { return m.direct.up || m.held }

// wants reports whether a session of kind k should run at time at.
func (m *Machine) wants(k Kind, at time.Time) bool {
	if k == Direct {
		return true
	}
	if !m.cfg.HaveRelay {
		return false
	}
	direct := m.directWorks()
	if !direct && at.Before(m.relayAfter) {
		return false // the direct session's head start
	}
	if !m.cfg.Controlling {
		// Ask for a relay only while there is no direct path; keep whatever
		// relay session the controlling peer offers.
		return !direct
	}
	if direct {
		// Never start a relay next to a working direct path; keep a running
		// one until the direct path has proven itself for RelayLinger.
		return m.relay.running && (m.directGood.IsZero() || at.Before(m.directGood.Add(m.cfg.RelayLinger)))
	}
	return true
}

// decide derives the actions that bring the world in line with the state.
func (m *Machine) decide(at time.Time, acts []Action) []Action {
	if !m.started {
		return acts
	}
	// 1. The path: direct wins; relayed only without a direct path.
	switch {
	case m.direct.up:
		if m.path != PathDirect || m.pathPair != m.direct.pair || m.pathID != m.direct.id {
			acts = m.setPath(PathDirect, &m.direct, at, acts)
		}
	case m.held:
		// Keep the held direct path until the new session decides.
	case m.relay.up:
		if m.path != PathRelayed || m.pathID != m.relay.id {
			acts = m.setPath(PathRelayed, &m.relay, at, acts)
		}
	}
	if m.path != PathDirect {
		m.directGood = time.Time{}
	}
	// 2. The sessions.
	for _, s := range []*session{&m.direct, &m.relay} {
		want := m.wants(s.kind, at)
		switch {
		case want && !s.running && !s.requested.IsZero() && at.Sub(s.requested) >= m.cfg.RequestTimeout:
			// Controlled side: the request went unanswered.
			s.requested = time.Time{}
			m.scheduleRetry(s, at)
		}
		switch {
		case want && !s.running && s.requested.IsZero() && !at.Before(s.nextStart) && !at.Before(s.awaitOffer):
			reason := "no session"
			if s.kind == Relay && !m.direct.up {
				reason = "no direct path"
			}
			if s.why != "" {
				reason, s.why = s.why, ""
			}
			acts = append(acts, Action{Type: ActionStart, Kind: s.kind, Reason: reason})
			s.lastStarted = at
			if m.cfg.Controlling {
				s.running, s.id, s.up = true, 0, false
			} else {
				s.requested = at
			}
		case !want && s.running && m.cfg.Controlling && s.kind == Relay:
			reason := "direct path works"
			if !m.cfg.HaveRelay {
				reason = "no relay servers"
			}
			acts = m.stop(s, at, reason, acts)
		}
	}
	return acts
}

func (m *Machine) setPath(p Path, s *session, at time.Time, acts []Action) []Action {
	typ := ActionSetDirect
	if p == PathRelayed {
		typ = ActionSetRelayed
	}
	if m.path == None {
		m.epoch = at
		if hs := m.lastHandshake; !hs.IsZero() && at.Sub(hs) < m.cfg.HandshakeStale-m.cfg.HandshakeTimeout {
			// WireGuard still has a live session: it carries on over the new
			// path with the same keys and makes no handshake for it before
			// its own rekey (two minutes after the last one). Demanding one
			// within HandshakeTimeout would fail a working path; the stale
			// check still catches a path that carries nothing.
			m.epoch = hs
		}
	}
	m.path, m.pathPair, m.pathID, m.pathSince, m.held = p, s.pair, s.id, at, false
	return append(acts, Action{Type: typ, Kind: s.kind, Session: s.id, Pair: s.pair})
}
