// Package control is meshd's management service: it registers peers (setup
// keys, key proofs, login expiry), keeps the account's peers, groups,
// policies, routes and DNS, computes each peer's network map (through
// internal/netmap) and streams it, and serves the admin API. It serves two
// Connect services on a shared mux: meshd.control.v1.ControlService for
// agents and meshd.admin.v1.AdminService for admins. roles/control and
// roles/all create it; controltest runs it in-process for tests.
//
// Single sign-on (sso.go) uses github.com/coreos/go-oidc/v3 and
// golang.org/x/oauth2 because OIDC discovery, JWKS rotation and ID token
// checks are easy to get subtly wrong by hand.
package control

import (
	"compress/gzip"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"go.uber.org/zap"
	"google.golang.org/protobuf/types/known/timestamppb"

	adminv1 "meshd/api/admin/v1"
	controlv1 "meshd/api/control/v1"
	"meshd/api/control/v1/controlv1connect"
	"meshd/internal/cluster"
	"meshd/internal/keys"
	"meshd/internal/seal"
	"meshd/internal/server"
	"meshd/internal/turncred"
	"meshd/store"
)

// Defaults of Options.
const (
	DefaultHeartbeat       = 15 * time.Second
	DefaultCoalesce        = 20 * time.Millisecond
	DefaultJanitorInterval = 30 * time.Second
	// DefaultReplicaHeartbeat and DefaultReplicaTTL: a dead replica leaves
	// the list (and its agents' maps) within ten seconds.
	DefaultReplicaHeartbeat = 2 * time.Second
	DefaultReplicaTTL       = 10 * time.Second
	DefaultOverlayNetwork   = "100.64.0.0/16"
	DefaultDNSDomain        = "meshd.internal"
	ChallengeTTL            = 2 * time.Minute
)

// DefaultTURNTTL is the lifetime of TURN credentials, short so that a
// deleted or blocked peer's credentials soon stop working also at a relay
// that cannot ask control (a separately run `meshd relay`). Agents keep
// their relayed sessions across the renewals (peerconn signs their TURN
// requests anew with the newest credential).
const DefaultTURNTTL = 10 * time.Minute

// Names of control's secrets in the store.
const (
	secretControlKey = "control_key"
	secretTURN       = "turn_secret"
)

// RelayOptions are the STUN/TURN servers put into every map.
type RelayOptions struct {
	// URLs: stun:host:port, turn:host:port?transport=udp|tcp,
	// turns:host:port?transport=tcp.
	URLs []string
	// Secret is the TURN REST secret shared with the relays; nil: the one
	// control keeps in its database (see TURNSecret).
	Secret []byte
	// TTL of the TURN credentials; zero: DefaultTURNTTL. Each peer gets a
	// full map with fresh credentials at half their lifetime.
	TTL time.Duration
}

// Options configure a Service.
type Options struct {
	// Store is the database replicas share (*store.Store).
	Store Store
	// Cluster is what the replicas of the network share besides the
	// store: changes, presence, leases; nil: cluster.Local() (one replica).
	Cluster cluster.Cluster
	Log     *zap.Logger
	// PublicURL is how agents reach control (https://host:port); it goes into
	// join tokens.
	PublicURL string
	// TLSPin is the pin of control's self-signed certificate ("sha256:HEX"),
	// for join tokens; empty with a CA-signed certificate.
	TLSPin string
	// SignalURL and SignalPin go into every map.
	SignalURL string
	SignalPin string
	Relays    RelayOptions
	// Now is the clock (tests); nil: time.Now.
	Now func() time.Time

	// Tuning; zero values mean the defaults above.
	Heartbeat       time.Duration // between heartbeats on a Sync stream
	Coalesce        time.Duration // how long a burst of changes is gathered
	JanitorInterval time.Duration // ephemeral peers, expired logins
	MTU             uint32        // tunnel MTU in maps (netmap.DefaultMTU)
	TicketTTL       time.Duration // of signal tickets (DefaultTicketTTL)
	// ReplicaHeartbeat is how often this replica says it is alive, and
	// ReplicaTTL how long a silent replica counts as alive.
	ReplicaHeartbeat time.Duration
	ReplicaTTL       time.Duration

	// Status, when set, adds what runs beside control in this process
	// (signal's and the relay's counters) to the admin API's server status.
	Status func(*adminv1.ServerStatus)

	// OIDC turns on single sign-on (sso.go); without an issuer there is
	// none and setup keys are the only way in.
	OIDC OIDCOptions
}

// Service is the control service. Create it with New, mount it on a server
// with Mount, stop it with Close.
type Service struct {
	opts       Options
	log        *zap.Logger
	st         Store
	cl         cluster.Cluster
	now        func() time.Time
	key        keys.Private
	ticketKey  ed25519.PrivateKey // signs signal tickets
	turnSecret []byte
	stunURLs   []string
	turnURLs   []string
	challenger *seal.Challenger
	started    time.Time
	m          *metrics
	sso        *ssoClient // nil without single sign-on

	down atomic.Pointer[storeDown] // nil while the database answers
	view atomic.Pointer[replicaView]
	// local holds the challenges issued while the shared one-time store
	// was unreachable: valid on this replica only.
	local *seal.Challenger

	mu       sync.RWMutex
	accounts []*account
	tokens   map[string]*store.AdminToken // string(hash) → token

	paths pathStore // the agents' latest path reports

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup // background goroutines

	streamMu sync.Mutex
	closed   bool
	streams  sync.WaitGroup // open Sync streams
}

// New loads the state of every account from the store (creating control's
// key and TURN secret the first time) and starts the background work.
func New(ctx context.Context, opts Options) (*Service, error) {
	if opts.Store == nil {
		return nil, errors.New("control: no store")
	}
	if opts.Log == nil {
		opts.Log = zap.NewNop()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Heartbeat <= 0 {
		opts.Heartbeat = DefaultHeartbeat
	}
	if opts.Coalesce <= 0 {
		opts.Coalesce = DefaultCoalesce
	}
	if opts.JanitorInterval <= 0 {
		opts.JanitorInterval = DefaultJanitorInterval
	}
	if opts.Relays.TTL <= 0 {
		opts.Relays.TTL = DefaultTURNTTL
	}
	if opts.ReplicaHeartbeat <= 0 {
		opts.ReplicaHeartbeat = DefaultReplicaHeartbeat
	}
	if opts.ReplicaTTL <= 0 {
		opts.ReplicaTTL = DefaultReplicaTTL
	}
	if opts.Cluster == nil {
		opts.Cluster = cluster.Local()
	}
	s := &Service{opts: opts, log: opts.Log.With(zap.String("replica", opts.Cluster.Self())), st: opts.Store, cl: opts.Cluster, now: opts.Now, started: opts.Now(),
		challenger: seal.NewChallenger(ChallengeTTL), local: seal.NewChallenger(ChallengeTTL),
		tokens: map[string]*store.AdminToken{}, m: newMetrics()}
	for _, u := range opts.Relays.URLs {
		switch scheme, _, _ := strings.Cut(u, ":"); scheme {
		case "stun", "stuns":
			s.stunURLs = append(s.stunURLs, u)
		case "turn", "turns":
			s.turnURLs = append(s.turnURLs, u)
		default:
			return nil, fmt.Errorf("control: relay url %q: want stun:, turn: or turns:", u)
		}
	}
	if opts.SignalURL != "" {
		if u, err := url.Parse(opts.SignalURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			return nil, fmt.Errorf("control: signal url %q: want https://host:port", opts.SignalURL)
		}
	}

	raw, err := s.st.SecretOrCreate(ctx, secretControlKey, func() ([]byte, error) {
		k, err := keys.Generate()
		if err != nil {
			return nil, err
		}
		return k.Bytes()[:], nil
	})
	if err != nil {
		return nil, fmt.Errorf("control: %w", err)
	}
	k, err := keys.FromBytes(raw)
	if err != nil {
		return nil, fmt.Errorf("control: stored key: %w", err)
	}
	if s.key, err = keys.ParsePrivate(k.String()); err != nil {
		return nil, fmt.Errorf("control: stored key: %w", err)
	}
	if err := s.loadTicketKey(ctx); err != nil {
		return nil, err
	}
	s.turnSecret = opts.Relays.Secret
	if len(s.turnSecret) == 0 {
		s.turnSecret, err = s.st.SecretOrCreate(ctx, secretTURN, func() ([]byte, error) {
			b := make([]byte, 32)
			_, err := rand.Read(b)
			return b, err
		})
		if err != nil {
			return nil, fmt.Errorf("control: %w", err)
		}
	}

	if err := s.load(ctx); err != nil {
		return nil, err
	}
	if opts.OIDC.Issuer != "" {
		s.sso = newSSOClient(opts.OIDC, s.log)
	}
	s.ctx, s.cancel = context.WithCancel(context.WithoutCancel(ctx))
	// Subscribe before anything can change: a change published from now
	// on reaches this replica.
	msgs, err := s.cl.Subscribe(s.ctx, busChannel)
	if err != nil {
		s.cancel()
		return nil, fmt.Errorf("control: subscribe to changes: %w", err)
	}
	s.heartbeat(ctx)
	s.resyncPresence(ctx)
	if s.sso != nil {
		// In the background: control serves setup keys without the
		// provider, and SSO logins try discovery again.
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			if _, err := s.sso.discover(s.ctx); err != nil {
				s.log.Warn("identity provider unreachable at start; SSO logins fail until it answers", zap.Error(err))
			}
		}()
	}
	s.mu.RLock()
	for _, a := range s.accounts {
		s.start(a)
	}
	s.mu.RUnlock()
	for _, job := range []func(context.Context){s.janitor, s.heartbeats, s.probeStore, func(ctx context.Context) { s.follow(ctx, msgs) }} {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			job(s.ctx)
		}()
	}
	return s, nil
}

func (s *Service) load(ctx context.Context) error {
	accts, err := s.st.Accounts(ctx)
	if err != nil {
		return fmt.Errorf("control: %w", err)
	}
	for _, acct := range accts {
		d, err := s.st.LoadAccount(ctx, acct.ID)
		if err != nil {
			return fmt.Errorf("control: %w", err)
		}
		a, err := newAccount(s, d)
		if err != nil {
			return fmt.Errorf("control: %w", err)
		}
		if _, err := a.reloadSSO(ctx); err != nil {
			return fmt.Errorf("control: %w", err)
		}
		s.accounts = append(s.accounts, a)
	}
	toks, err := s.st.AdminTokens(ctx)
	if err != nil {
		return fmt.Errorf("control: %w", err)
	}
	for i := range toks {
		s.tokens[string(toks[i].Hash)] = &toks[i]
	}
	return nil
}

// start builds an account's first index and runs its distributor.
func (s *Service) start(a *account) {
	a.dist.flush()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		a.dist.run(s.ctx, s.opts.Coalesce)
	}()
}

// Mux is where Mount registers handlers: *server.Server or *http.ServeMux.
type Mux interface {
	Handle(pattern string, h http.Handler)
}

// Mount serves the peer service and the admin service on m.
func (s *Service) Mount(m Mux) {
	m.Handle(controlv1connect.NewControlServiceHandler(&peerAPI{s},
		server.ReadLimit(peerReadMaxBytes, newFastGzip), connect.WithCompressMinBytes(compressMinBytes), s.m.interceptor()))
	m.Handle(s.AdminHandler())
	if s.sso != nil {
		s.browserHandlers(m)
	}
}

// Only large maps (64 KiB and more: hundreds of peers, where bytes start to
// matter) are compressed, at gzip's fastest level. A change fans out to many
// streams at once: on maps of tens of peers, compressing costs much more CPU
// per change for little gain (BenchmarkPolicyChangeFanout measures it), and
// the default level costs several times BestSpeed. Heartbeats are never compressed.
func newFastGzip() connect.Compressor {
	w, _ := gzip.NewWriterLevel(io.Discard, gzip.BestSpeed)
	return w
}

const compressMinBytes = 64 << 10

// Close ends every Sync stream (recording when its peer was last seen) and
// stops the background work. It does not close the store.
func (s *Service) Close() error {
	s.streamMu.Lock()
	s.closed = true
	s.streamMu.Unlock()
	s.cancel()
	// Streams end at once, except one blocked sending to an agent that
	// stopped reading: that one ends when the server closes its connection.
	done := make(chan struct{})
	go func() { s.streams.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(closeWait):
		s.log.Warn("control closed while streams are still blocked sending; they end with the server")
	}
	s.wg.Wait()
	return nil
}

// closeWait bounds how long Close waits for streams to end.
const closeWait = 5 * time.Second

// streamStarted registers an open stream; false after Close.
func (s *Service) streamStarted() bool {
	s.streamMu.Lock()
	defer s.streamMu.Unlock()
	if s.closed {
		return false
	}
	s.streams.Add(1)
	return true
}

// TURNSecret is the secret TURN credentials are made with: the one given
// in Options.Relays, or the one control generated once and keeps in its
// database. `meshd all` hands it to its in-process relay.
func (s *Service) TURNSecret() []byte { return append([]byte(nil), s.turnSecret...) }

// PublicKey is control's Curve25519 key that peers prove their keys to.
func (s *Service) PublicKey() keys.Key { return s.key.Public() }

// relays returns the relay servers of a peer's map, with fresh TURN
// credentials, and when those expire (zero without TURN servers).
func (s *Service) relays(peerID string) ([]*controlv1.RelayServer, time.Time) {
	var out []*controlv1.RelayServer
	stun, turn := s.stunURLs, s.turnURLs
	if v := s.view.Load(); v != nil {
		stun, turn = v.stun, v.turn // every live replica's
	}
	if len(stun) > 0 {
		out = append(out, &controlv1.RelayServer{Urls: stun})
	}
	if len(turn) == 0 {
		return out, time.Time{}
	}
	c := turncred.Issue(s.turnSecret, peerID, s.now(), s.opts.Relays.TTL)
	out = append(out, &controlv1.RelayServer{Urls: turn, Username: c.Username, Credential: c.Password,
		Expires: timestamppb.New(c.Expires)})
	return out, c.Expires
}

// accountList returns the accounts.
func (s *Service) accountList() []*account {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return append([]*account(nil), s.accounts...)
}

// peerByKey finds the account and peer with a public key.
func (s *Service) peerByKey(pub string) (*account, *store.Peer) {
	for _, a := range s.accountList() {
		a.mu.Lock()
		p := a.byKey[pub]
		a.mu.Unlock()
		if p != nil {
			return a, p
		}
	}
	return nil, nil
}

// accountByKeyHash finds the account of a setup key.
func (s *Service) accountByKeyHash(hash []byte) *account {
	for _, a := range s.accountList() {
		a.mu.Lock()
		k := a.keyHash[string(hash)]
		a.mu.Unlock()
		if k != nil {
			return a
		}
	}
	return nil
}
