// Package peerconn runs the ICE sessions (pion/ice/v3) between this agent and
// one remote peer. There are two kinds of session, and an agent may run one
// of each per peer at the same time:
//
//   - a direct session gathers host and server-reflexive candidates on the
//     WireGuard socket itself, through the shared Mux over
//     wg.Device.STUNConn(), so a pair it selects is a path WireGuard can use
//     straight from its own socket (wg.Device.SetDirect);
//   - a relay session gathers TURN relay candidates only (UDP, TCP or TLS to
//     the relay) and hands WireGuard its connection (wg.Device.SetRelayed).
//
// Credentials and candidates travel as meshd.peer.v1 messages that the caller
// seals and sends through signal. The controlling peer (larger public key)
// offers; the controlled peer answers. Which session carries traffic is not
// decided here but by internal/agent/path; Only internal/agent imports it.
//
// TLS to a turns: relay skips certificate verification: meshd's relay usually
// has a self-signed certificate, and what crosses it is WireGuard ciphertext
// that the relay cannot read or forge. The TURN credentials it could see are
// short-lived and only let someone use the relay.
package peerconn

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/pion/ice/v3"
	"github.com/pion/transport/v3"
	"go.uber.org/zap"
)

// State is an ICE session's state.
type State int

const (
	Checking State = iota
	Connected
	Disconnected
	Failed
	Closed
)

func (s State) String() string {
	return [...]string{"checking", "connected", "disconnected", "failed", "closed"}[s]
}

// Candidate is one end of a selected pair, as status shows it.
type Candidate struct {
	Type    string // host, srflx, prflx, relay
	Address string // ip:port
}

// Pair is a selected candidate pair.
type Pair struct{ Local, Remote Candidate }

// Timing tunes pion's connectivity checks. The defaults (DirectTiming,
// RelayTiming) are much faster than pion's own, which are made for browsers
// on the internet: a path should be up tens of milliseconds after both peers
// have each other's candidates on a LAN.
type Timing struct {
	// CheckInterval is how often pending pairs are checked.
	CheckInterval time.Duration
	// MaxBindingRequests per pair before it is failed.
	MaxBindingRequests uint16
	// Keepalive: consent checks on the selected pair.
	Keepalive time.Duration
	// Disconnected: no answer on the selected pair this long.
	Disconnected time.Duration
	// Failed: this long after Disconnected (or after Disconnected+Failed in
	// checking) the session fails.
	Failed time.Duration
	// Minimum waits before nominating a pair whose worse end is of a type.
	HostWait, SrflxWait, PrflxWait, RelayWait time.Duration
	// STUNGatherTimeout bounds the wait for a server-reflexive address.
	STUNGatherTimeout time.Duration
	// TURNLifetime is the lifetime a relay session asks for its TURN
	// allocations (pion refreshes them at half of it); zero: the server's
	// default, 10 minutes.
	TURNLifetime time.Duration
}

// DirectTiming is the default timing of direct sessions.
//
// Every pair of a direct session is a path without a relay, so the first
// pair that works is nominated (no acceptance waits): on a LAN host pairs
// answer first anyway.
var DirectTiming = Timing{
	CheckInterval:      25 * time.Millisecond,
	MaxBindingRequests: 80, // 2 s of checks per pair
	Keepalive:          time.Second,
	Disconnected:       3 * time.Second,
	Failed:             5 * time.Second,
	HostWait:           0,
	SrflxWait:          0,
	PrflxWait:          0,
	RelayWait:          time.Second, // unused: direct sessions have no relay candidates
	STUNGatherTimeout:  3 * time.Second,
}

// RelayTiming is the default timing of relay sessions.
var RelayTiming = Timing{
	CheckInterval:      25 * time.Millisecond,
	MaxBindingRequests: 120,
	Keepalive:          2 * time.Second,
	Disconnected:       5 * time.Second,
	Failed:             10 * time.Second,
	RelayWait:          0,
	STUNGatherTimeout:  3 * time.Second,
}

// Config makes a Session.
type Config struct {
	Kind Kind
	// ID names the session in every message (chosen by the controlling peer).
	ID          uint64
	Controlling bool
	// Mux is the shared WireGuard-socket mux; required for direct sessions.
	Mux *Mux
	// Servers of the current map: STUN for direct, TURN for relay sessions.
	Servers Servers
	// Net is the network pion uses for TURN and for listing interfaces; nil
	// is the host's.
	Net transport.Net
	// SocketBuffer is the receive and send buffer of the UDP sockets a
	// relay session opens to TURN servers (BufferedNet): zero takes
	// SocketBuffer, negative leaves the system's default.
	SocketBuffer int
	// IncludeLoopback offers and accepts loopback candidates (tests with
	// several agents on one host).
	IncludeLoopback bool
	// Guard: addresses that lead into the mesh (see Guard), read at each
	// use; nil guards nothing.
	Guard *Guard
	// Timing; zero takes DirectTiming or RelayTiming.
	Timing *Timing
	Log    *zap.Logger
	// OnCandidate hands a local candidate (its SDP) for the remote peer to
	// the caller, which wraps, seals and sends it. Called from pion's
	// goroutines; must not block.
	OnCandidate func(sdp string)
	// OnState reports state changes (Connected with the selected pair).
	// Called from pion's goroutines; must not block.
	OnState func(State, Pair)
}

// ErrClosed is returned by a closed session.
var ErrClosed = errors.New("peerconn: session closed")

// Session is one ICE session with one remote peer.
type Session struct {
	cfg   Config
	log   *zap.Logger
	agent *ice.Agent
	rnet  *relayNet // relay sessions: the network pion's TURN sockets come from
	ufrag string
	pwd   string

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	gathered     chan struct{}
	gatheredOnce sync.Once

	mu        sync.Mutex
	offered   map[string]bool // candidates sent, by "type addr:port"
	connected bool
	refused   bool // a selected pair was in the guard: reported failed
	started   bool
	conn      net.Conn // *ice.Conn, or *relayConn for a relay session
	pair      Pair
	// relay sessions whose selected pair's local candidate is a TURN
	// allocation: the pair's addresses, parsed once (fastRoute).
	relayLocal, relayRemote netip.AddrPort
	closed                  bool
}

// New creates a session with fresh credentials. Nothing is sent until
// Gather or Connect.
func New(cfg Config) (*Session, error) {
	if cfg.Kind != Direct && cfg.Kind != Relay {
		return nil, fmt.Errorf("peerconn: session kind %v", cfg.Kind)
	}
	if cfg.Kind == Direct && cfg.Mux == nil {
		return nil, errors.New("peerconn: a direct session needs the WireGuard socket mux")
	}
	if cfg.Kind == Relay && len(cfg.Servers.TURN) == 0 {
		return nil, errors.New("peerconn: a relay session needs a TURN server")
	}
	if cfg.Log == nil {
		cfg.Log = zap.NewNop()
	}
	t := cfg.Timing
	if t == nil {
		t = &DirectTiming
		if cfg.Kind == Relay {
			t = &RelayTiming
		}
	}
	tnet := cfg.Net
	var rnet *relayNet
	if cfg.Kind == Relay {
		size := cfg.SocketBuffer
		if size == 0 {
			size = SocketBuffer
		}
		var err error
		if tnet, err = MarkedNet(tnet); err != nil {
			return nil, fmt.Errorf("peerconn: %w", err)
		}
		if tnet, err = BufferedNet(tnet, size); err != nil {
			return nil, err
		}
		rnet = newRelayNet(tnet, cfg.Servers.TURN, t.TURNLifetime)
		tnet = rnet
	}
	ufrag, pwd := randomString(6), randomString(24)
	log := cfg.Log.With(zap.Stringer("kind", cfg.Kind), zap.Uint64("session", cfg.ID))
	ac := &ice.AgentConfig{
		LocalUfrag:             ufrag,
		LocalPwd:               pwd,
		MulticastDNSMode:       ice.MulticastDNSModeDisabled,
		NetworkTypes:           []ice.NetworkType{ice.NetworkTypeUDP4, ice.NetworkTypeUDP6},
		CheckInterval:          &t.CheckInterval,
		MaxBindingRequests:     &t.MaxBindingRequests,
		KeepaliveInterval:      &t.Keepalive,
		DisconnectedTimeout:    &t.Disconnected,
		FailedTimeout:          &t.Failed,
		HostAcceptanceMinWait:  &t.HostWait,
		SrflxAcceptanceMinWait: &t.SrflxWait,
		PrflxAcceptanceMinWait: &t.PrflxWait,
		RelayAcceptanceMinWait: &t.RelayWait,
		STUNGatherTimeout:      &t.STUNGatherTimeout,
		LoggerFactory:          LoggerFactory(cfg.Log.Named("pion")),
		Net:                    tnet,
		IncludeLoopback:        cfg.IncludeLoopback,
		InsecureSkipVerify:     true, // see the package comment
	}
	if cfg.Kind == Direct {
		ac.CandidateTypes = []ice.CandidateType{ice.CandidateTypeHost, ice.CandidateTypeServerReflexive}
		ac.Urls = cfg.Servers.STUN
		ac.UDPMux = cfg.Mux
		ac.UDPMuxSrflx = cfg.Mux
	} else {
		ac.CandidateTypes = []ice.CandidateType{ice.CandidateTypeRelay}
		servers := cfg.Servers
		if cfg.Mux != nil {
			servers = cfg.Mux.RelayURLs(servers)
		}
		ac.Urls = servers.TURN
		ac.ProxyDialer = rnet.dialer() // TURN over TCP and TLS: turndial.go
	}
	a, err := ice.NewAgent(ac)
	if err != nil {
		return nil, fmt.Errorf("peerconn: new %v agent: %w", cfg.Kind, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Session{cfg: cfg, log: log, agent: a, rnet: rnet, ufrag: ufrag, pwd: pwd, ctx: ctx, cancel: cancel, gathered: make(chan struct{})}
	if err := s.handlers(); err != nil {
		cancel()
		_ = a.Close()
		return nil, err
	}
	return s, nil
}

func (s *Session) handlers() error {
	if err := s.agent.OnCandidate(s.onCandidate); err != nil {
		return err
	}
	if err := s.agent.OnConnectionStateChange(s.onState); err != nil {
		return err
	}
	return s.agent.OnSelectedCandidatePairChange(func(local, remote ice.Candidate) {
		p := Pair{Local: candidate(local), Remote: candidate(remote)}
		if s.looping(p) {
			s.refuse(p)
			return
		}
		s.mu.Lock()
		s.setPair(p)
		report := s.connected && !s.closed
		s.mu.Unlock()
		if report {
			s.cfg.OnState(Connected, p)
		}
	})
}

func (s *Session) onCandidate(c ice.Candidate) {
	if c == nil {
		s.gatheredOnce.Do(func() { close(s.gathered) })
		return
	}
	if !s.usable(c.Address()) {
		return
	}
	// pion's mux finds a server-reflexive address once per local address:
	// offer each distinct candidate once.
	k := c.Type().String() + " " + c.Address() + ":" + fmt.Sprint(c.Port())
	s.mu.Lock()
	dup := s.offered[k]
	if s.offered == nil {
		s.offered = map[string]bool{}
	}
	s.offered[k] = true
	s.mu.Unlock()
	if dup {
		return
	}
	s.log.Debug("local candidate", zap.String("candidate", c.String()))
	s.cfg.OnCandidate(c.Marshal())
}

func (s *Session) onState(cs ice.ConnectionState) {
	var st State
	switch cs {
	case ice.ConnectionStateChecking:
		st = Checking
	case ice.ConnectionStateConnected, ice.ConnectionStateCompleted:
		st = Connected
	case ice.ConnectionStateDisconnected:
		st = Disconnected
	case ice.ConnectionStateFailed:
		st = Failed
	case ice.ConnectionStateClosed:
		st = Closed
	default:
		return
	}
	s.mu.Lock()
	if s.closed && st != Closed {
		s.mu.Unlock()
		return
	}
	if s.refused {
		s.mu.Unlock()
		return // reported failed already; pion's view no longer counts
	}
	s.connected = st == Connected
	if st == Connected && s.pair == (Pair{}) {
		if p, err := s.agent.GetSelectedCandidatePair(); err == nil && p != nil {
			s.setPair(Pair{Local: candidate(p.Local), Remote: candidate(p.Remote)})
		}
	}
	p := s.pair
	if st == Connected && s.looping(p) {
		s.connected = false
		s.mu.Unlock()
		s.refuse(p)
		return
	}
	s.mu.Unlock()
	s.log.Debug("ice state", zap.Stringer("state", cs), zap.String("local", p.Local.Address), zap.String("remote", p.Remote.Address))
	s.cfg.OnState(st, p)
}

// refuse reports a selected pair that leads into the mesh as a failure,
// once: the session is useless (pion keeps the pair it selected), and the
// caller replaces it.
func (s *Session) refuse(p Pair) {
	s.mu.Lock()
	done := s.refused || s.closed
	s.refused, s.connected = true, false
	s.mu.Unlock()
	if done {
		return
	}
	s.log.Warn("selected pair leads into the mesh; refused", zap.String("local", p.Local.Address), zap.String("remote", p.Remote.Address))
	s.cfg.OnState(Failed, p)
}

// Kind returns the session's kind.
func (s *Session) Kind() Kind { return s.cfg.Kind }

// ID returns the session's id.
func (s *Session) ID() uint64 { return s.cfg.ID }

// Credentials are what the remote peer needs to connect to this session:
// the caller sends them in an offer (controlling side) or an answer.
func (s *Session) Credentials() Credentials { return Credentials{Ufrag: s.ufrag, Pwd: s.pwd} }

// Gather starts gathering local candidates; each is sent as it is found.
// Send the Credentials (in an offer or answer) first: signal keeps the order of one sender's
// messages, so the remote learns of the session before its candidates.
func (s *Session) Gather() error {
	if err := s.agent.GatherCandidates(); err != nil {
		return fmt.Errorf("peerconn: gather: %w", err)
	}
	return nil
}

// Candidates returns the SDP of the local candidates gathered so far, for
// sending them again with a repeated offer.
func (s *Session) Candidates() []string {
	cs, err := s.agent.GetLocalCandidates()
	if err != nil {
		return nil
	}
	out := make([]string, 0, len(cs))
	for _, c := range cs {
		if !s.usable(c.Address()) {
			continue
		}
		out = append(out, c.Marshal())
	}
	return out
}

// Gathered is closed when gathering has finished.
func (s *Session) Gathered() <-chan struct{} { return s.gathered }

// Connect starts connectivity checks with the remote peer's credentials.
// It returns at once; progress arrives through OnState.
func (s *Session) Connect(remoteUfrag, remotePwd string) error {
	if remoteUfrag == "" || remotePwd == "" {
		return errors.New("peerconn: remote credentials missing")
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	if s.started {
		s.mu.Unlock()
		return nil
	}
	s.started = true
	s.mu.Unlock()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		var c *ice.Conn
		var err error
		if s.cfg.Controlling {
			c, err = s.agent.Dial(s.ctx, remoteUfrag, remotePwd)
		} else {
			c, err = s.agent.Accept(s.ctx, remoteUfrag, remotePwd)
		}
		if err != nil {
			if s.ctx.Err() == nil {
				s.log.Debug("ice connect", zap.Error(err))
			}
			return
		}
		var nc net.Conn = c
		if s.rnet != nil {
			nc = &relayConn{Conn: c, s: s}
		}
		s.mu.Lock()
		s.conn = nc
		s.mu.Unlock()
	}()
	return nil
}

// AddCandidate adds a remote candidate in SDP form. Candidates of the wrong
// type for the session (or loopback ones, unless allowed) are dropped.
func (s *Session) AddCandidate(sdp string) error {
	c, err := ice.UnmarshalCandidate(sdp)
	if err != nil {
		return fmt.Errorf("peerconn: candidate %q: %w", sdp, err)
	}
	relay := c.Type() == ice.CandidateTypeRelay
	if relay != (s.cfg.Kind == Relay) {
		return nil
	}
	if !s.usable(c.Address()) {
		return nil
	}
	s.log.Debug("remote candidate", zap.String("candidate", c.String()))
	return s.agent.AddRemoteCandidate(c)
}

// Conn returns the session's connection once it is connected (nil before):
// what a relay session hands WireGuard. A relay session's conn also has
// WriteBatch and Receive (wg/bind.BatchConn), its fast path over TURN/UDP.
func (s *Session) Conn() net.Conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn == nil {
		return nil
	}
	return s.conn
}

// WaitConn waits until the connection exists (it does right after the
// Connected state is reported) or ctx ends.
func (s *Session) WaitConn(ctx context.Context) (net.Conn, error) {
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for {
		if c := s.Conn(); c != nil {
			return c, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-s.ctx.Done():
			return nil, ErrClosed
		case <-t.C:
		}
	}
}

// Selected returns the selected pair, if connected.
func (s *Session) Selected() (Pair, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pair, s.connected
}

// RTT returns the latest round-trip time of a check on the selected pair
// (zero when unknown): for a relay session, through the relay to the
// remote and back, when the allocation is over UDP.
func (s *Session) RTT() time.Duration {
	p, ok := s.Selected()
	if !ok {
		return 0
	}
	if s.cfg.Kind == Relay {
		return s.relayRTT(p)
	}
	if s.cfg.Mux == nil {
		return 0
	}
	return s.cfg.Mux.RTT(p.Remote.Address)
}

// Close ends the session and waits for its goroutines. Safe to call twice.
func (s *Session) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	s.cancel()
	err := s.agent.GracefulClose()
	s.wg.Wait()
	return err
}

// RemoteAddrPort parses a candidate address for wg.Device.SetDirect.
func RemoteAddrPort(c Candidate) (netip.AddrPort, error) {
	ap, err := netip.ParseAddrPort(c.Address)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("peerconn: candidate address %q: %w", c.Address, err)
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), nil
}

func candidate(c ice.Candidate) Candidate {
	if c == nil {
		return Candidate{}
	}
	return Candidate{Type: c.Type().String(), Address: net.JoinHostPort(c.Address(), fmt.Sprint(c.Port()))}
}

// usable reports whether a candidate address may be offered or used.
func (s *Session) usable(addr string) bool {
	a, err := netip.ParseAddr(addr)
	if err != nil {
		return true // a name; pion resolves it
	}
	a = a.Unmap()
	if a.IsLoopback() && !s.cfg.IncludeLoopback {
		return false
	}
	if a.IsLinkLocalUnicast() {
		return false // needs a zone; useless to the remote peer
	}
	return !s.cfg.Guard.Contains(a)
}

// looping reports whether a selected pair has an end in the guard: such a
// pair is never reported connected (see Guard).
func (s *Session) looping(p Pair) bool {
	return s.cfg.Guard.containsHost(p.Local.Address) || s.cfg.Guard.containsHost(p.Remote.Address)
}

func randomString(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic("peerconn: crypto/rand failed: " + err.Error())
	}
	return base64.RawStdEncoding.EncodeToString(b)
}
