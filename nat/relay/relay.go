package relay

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/turn/v3"
	"go.uber.org/zap"

	"meshd/internal/sockbuf"
	"meshd/internal/udpgso"
)

// Defaults of Options.
const (
	DefaultListenAddr = ":3478"
	DefaultPortMin    = 49152
	DefaultPortMax    = 65535
	DefaultRealm      = "meshd"
	// DefaultMaxAllocationsPerUser bounds one credential (one peer). An
	// agent holds one allocation per peer it reaches through the relay, so
	// this is also how many relayed peers one machine can have; the lab's
	// ten-host matrix needs nine.
	DefaultMaxAllocationsPerUser = 256
	DefaultMaxAllocations        = 16384
	DefaultMaxLifetime           = 24 * time.Hour
	DefaultMaxConns              = 8192
	// StreamIdleTimeout closes a TCP or TLS connection that has had no
	// allocation for this long (a connection with one lives as long as it).
	StreamIdleTimeout = time.Minute
	// socketBuffer is what we ask the kernel for on every UDP socket: a
	// relay forwards bursts of a whole WireGuard batch at once.
	socketBuffer = 4 << 20
	// udpInboundMTU is the largest datagram a client may send us; pion's
	// default (1600) would drop jumbo WireGuard packets.
	udpInboundMTU = 65536
	// streamInboundMTU bounds one TURN frame on TCP/TLS.
	streamInboundMTU = 4096
)

// Errors callers and tests may check.
var (
	// ErrQuota means the credential's id already holds its allocations.
	ErrQuota = errors.New("relay: allocation quota reached")
	// ErrCapacity means the relay holds Options.MaxAllocations.
	ErrCapacity = errors.New("relay: server at allocation capacity")
	// ErrNoPorts means no free port was found in the relay port range.
	ErrNoPorts = errors.New("relay: no free port in the relay port range")
	// ErrNoTCPRelay: TCP allocations (RFC 6062) are not served.
	ErrNoTCPRelay = errors.New("relay: TCP allocations are not supported")
)

// Options configure a Server. Secret (or SecretFunc) and PublicIP are
// required; the rest have defaults.
type Options struct {
	Log *zap.Logger
	// Secret is the TURN REST secret shared with control. SecretFunc, when
	// set, is asked on every authentication instead (control may rotate it).
	Secret     []byte
	SecretFunc func() []byte
	// Realm of the long-term credentials; default "meshd".
	Realm string
	// PublicIP is the IPv4 address relayed addresses are announced on.
	PublicIP netip.Addr
	// RelayBindIP is where relay sockets are bound; default PublicIP when it
	// is a local address, else 0.0.0.0 (a VPS behind 1:1 NAT).
	RelayBindIP netip.Addr
	// ListenAddr serves STUN/TURN on UDP and TURN on TCP (same port);
	// default ":3478". Port 0 picks a free port (tests).
	ListenAddr string
	// NoTCP turns TURN over TCP on ListenAddr off.
	NoTCP bool
	// TLSListener, when set, serves TURN over TLS. Its connections must
	// already speak TLS (as from SplitTLS, TURNOverTLS or tls.NewListener).
	// The Server owns it and closes it on Close.
	TLSListener net.Listener
	// PortMin and PortMax bound relayed ports; default 49152-65535.
	PortMin, PortMax uint16
	// MaxAllocationsPerUser bounds the allocations of one credential id
	// (the part after ':' in the username); default 8.
	MaxAllocationsPerUser int
	// MaxAllocations bounds all allocations; default 16384.
	MaxAllocations int
	// MaxLifetime bounds the life of an allocation, refreshes or not;
	// default 24h. (Each refresh is also bounded: pion grants at most an
	// hour, 10 minutes by default, and refreshes need a valid credential.)
	MaxLifetime time.Duration
	// MaxConns bounds concurrent TCP and TLS connections; default 8192.
	MaxConns int
	// Workers is the number of UDP sockets sharing the port (SO_REUSEPORT,
	// Linux); default GOMAXPROCS. Each has its own read loop.
	Workers int
	// DenyPeers are peer prefixes no allocation may send to, on top of the
	// built-in list (see builtinDeny: loopback, private, CGNAT,
	// link-local, multicast, unspecified, reserved and broadcast).
	DenyPeers []netip.Prefix
	// AllowPeers are prefixes allocations may send to even though the
	// built-in list or DenyPeers refuse them: the private networks of a
	// private deployment. The relay host's own addresses stay refused.
	AllowPeers []netip.Prefix
	// Now is the clock for credential expiry; default time.Now.
	Now func() time.Time
	// UserValid, when set, says whether a credential id (a peer) may still
	// use the relay: control's answer, in a process that runs both. It is
	// asked on every authenticated request, and every RevokeCheck for the
	// ids holding allocations, whose allocations end when it says no.
	// Without it a credential works until it expires, and allocations
	// until the newest credential of their id accepted here expires.
	UserValid func(id string) bool
	// RevokeCheck is how often live allocations are checked against their
	// credentials' expiry and UserValid; default DefaultRevokeCheck.
	RevokeCheck time.Duration
}

func (o *Options) setDefaults() error {
	if o.Log == nil {
		o.Log = zap.NewNop()
	}
	if len(o.Secret) == 0 && o.SecretFunc == nil {
		return errors.New("relay: no TURN secret: set --turn-secret or --turn-secret-file (the secret control issues credentials with)")
	}
	if o.SecretFunc == nil {
		secret := append([]byte(nil), o.Secret...)
		o.SecretFunc = func() []byte { return secret }
	}
	if o.Realm == "" {
		o.Realm = DefaultRealm
	}
	if !o.PublicIP.IsValid() {
		return errors.New("relay: no public IP: set --relay-ip to the IPv4 address peers reach this relay on")
	}
	o.PublicIP = o.PublicIP.Unmap()
	if !o.PublicIP.Is4() || o.PublicIP.IsUnspecified() {
		return fmt.Errorf("relay: public IP %s: want a concrete IPv4 address (relayed addresses are IPv4)", o.PublicIP)
	}
	if o.ListenAddr == "" {
		o.ListenAddr = DefaultListenAddr
	}
	if o.PortMin == 0 && o.PortMax == 0 {
		o.PortMin, o.PortMax = DefaultPortMin, DefaultPortMax
	}
	if o.PortMin == 0 || o.PortMax < o.PortMin {
		return fmt.Errorf("relay: relay port range %d-%d: want 1 <= min <= max", o.PortMin, o.PortMax)
	}
	if o.MaxAllocationsPerUser <= 0 {
		o.MaxAllocationsPerUser = DefaultMaxAllocationsPerUser
	}
	if o.MaxAllocations <= 0 {
		o.MaxAllocations = DefaultMaxAllocations
	}
	if o.MaxLifetime <= 0 {
		o.MaxLifetime = DefaultMaxLifetime
	}
	if o.MaxConns <= 0 {
		o.MaxConns = DefaultMaxConns
	}
	if o.Workers <= 0 {
		o.Workers = runtime.GOMAXPROCS(0)
	}
	if !reusePortSupported {
		o.Workers = 1
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.RevokeCheck <= 0 {
		o.RevokeCheck = DefaultRevokeCheck
	}
	return nil
}

// Server is a running STUN/TURN server. It starts serving in New and stops
// in Close.
type Server struct {
	opts    Options
	log     *zap.Logger
	pionLog pionLoggerFactory
	ports   *portRange
	relays  []atomic.Pointer[relayConn] // by port - PortMin
	// relayGSO: relay sockets may send UDP GSO batches to peers.
	relayGSO atomic.Bool
	policy   *peerPolicy
	m        *metrics

	udp     *turn.Server
	udpAddr netip.AddrPort
	tcpLn   net.Listener
	tlsLn   net.Listener

	mu       sync.Mutex
	allocs   map[*relayConn]struct{}
	users    map[string]int
	expiry   map[string]time.Time // newest accepted credential expiry, by id in users
	streams  map[*front]struct{}
	closing  bool
	allocsWG sync.WaitGroup // one per live relayConn
	loopsWG  sync.WaitGroup // accept loops and stream read loops

	done      chan struct{} // closed when Close starts
	closeOnce sync.Once
	closeErr  error
}

// New binds the listeners and starts serving.
func New(opts Options) (*Server, error) {
	if err := opts.setDefaults(); err != nil {
		return nil, err
	}
	s := &Server{
		opts:    opts,
		log:     opts.Log,
		pionLog: pionLoggerFactory{log: opts.Log},
		m:       newMetrics(),
		allocs:  make(map[*relayConn]struct{}),
		users:   make(map[string]int),
		expiry:  make(map[string]time.Time),
		streams: make(map[*front]struct{}),
		done:    make(chan struct{}),
	}
	s.policy = newPeerPolicy(opts.PublicIP, opts.AllowPeers, opts.DenyPeers)
	ports, err := newPortRange(opts.PublicIP, opts.RelayBindIP, opts.PortMin, opts.PortMax)
	if err != nil {
		return nil, err
	}
	s.ports = ports
	s.relays = make([]atomic.Pointer[relayConn], int(opts.PortMax)-int(opts.PortMin)+1)

	udpConns, tcpLn, err := listen(opts.ListenAddr, opts.Workers, !opts.NoTCP)
	if err != nil {
		return nil, err
	}
	s.udpAddr = udpConns[0].LocalAddr().(*net.UDPAddr).AddrPort()
	s.relayGSO.Store(udpgso.Supported(udpConns[0]))
	s.tcpLn = tcpLn
	cfgs := make([]turn.PacketConnConfig, len(udpConns))
	for i, uc := range udpConns {
		f := s.newFront(transportUDP, uc, nil)
		cfgs[i] = turn.PacketConnConfig{PacketConn: f, RelayAddressGenerator: relayGen{f}, PermissionHandler: f.permit}
	}
	s.udp, err = turn.NewServer(turn.ServerConfig{
		PacketConnConfigs: cfgs,
		LoggerFactory:     s.pionLog,
		Realm:             opts.Realm,
		AuthHandler:       s.authenticate,
		InboundMTU:        udpInboundMTU,
	})
	if err != nil {
		for _, uc := range udpConns {
			uc.Close()
		}
		if tcpLn != nil {
			tcpLn.Close()
		}
		return nil, fmt.Errorf("relay: start TURN server: %w", err)
	}
	if tcpLn != nil {
		s.loopsWG.Add(1)
		go s.acceptLoop(tcpLn, transportTCP)
	}
	if opts.TLSListener != nil {
		s.tlsLn = opts.TLSListener
		s.loopsWG.Add(1)
		go s.acceptLoop(s.tlsLn, transportTLS)
	}
	s.loopsWG.Add(1)
	go s.revokeLoop()
	fields := []zap.Field{
		zap.Stringer("udp", s.udpAddr), zap.Int("workers", len(udpConns)),
		zap.Stringer("public_ip", opts.PublicIP), zap.Stringer("relay_bind_ip", s.ports.bind),
		zap.String("relay_ports", fmt.Sprintf("%d-%d", opts.PortMin, opts.PortMax)),
	}
	if tcpLn != nil {
		fields = append(fields, zap.Stringer("tcp", tcpLn.Addr()))
	}
	if s.tlsLn != nil {
		fields = append(fields, zap.Stringer("tls", s.tlsLn.Addr()))
	}
	s.log.Info("relay serving", fields...)
	return s, nil
}

// Run serves until ctx ends, then closes the server.
func (s *Server) Run(ctx context.Context) error {
	<-ctx.Done()
	return s.Close()
}

// Close stops the listeners, ends every allocation and connection and waits
// for them. It is safe to call more than once.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		close(s.done)
		s.mu.Lock()
		s.closing = true
		streams := make([]*front, 0, len(s.streams))
		for f := range s.streams {
			streams = append(streams, f)
		}
		s.mu.Unlock()

		var errs []error
		if err := s.udp.Close(); err != nil {
			errs = append(errs, err)
		}
		if s.tcpLn != nil {
			if err := s.tcpLn.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
				errs = append(errs, err)
			}
		}
		if s.tlsLn != nil {
			if err := s.tlsLn.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
				errs = append(errs, err)
			}
		}
		for _, f := range streams {
			f.Close()
		}
		s.loopsWG.Wait()
		// pion closes each allocation after its read loop returned.
		s.allocsWG.Wait()
		s.closeErr = errors.Join(errs...)
		s.log.Info("relay stopped")
	})
	return s.closeErr
}

// UDPAddr is where STUN and TURN over UDP are served.
func (s *Server) UDPAddr() netip.AddrPort { return s.udpAddr }

// TCPAddr is where TURN over TCP is served, or the zero value.
func (s *Server) TCPAddr() netip.AddrPort {
	if s.tcpLn == nil {
		return netip.AddrPort{}
	}
	return s.tcpLn.Addr().(*net.TCPAddr).AddrPort()
}

// TLSAddr is where TURN over TLS is served, or the zero value.
func (s *Server) TLSAddr() netip.AddrPort {
	if s.tlsLn == nil {
		return netip.AddrPort{}
	}
	if a, ok := s.tlsLn.Addr().(*net.TCPAddr); ok {
		return a.AddrPort()
	}
	return netip.AddrPort{}
}

// URLs returns the STUN and TURN URLs of a relay reachable at host (a DNS
// name or IP) on port (UDP and TCP) and tlsPort (0: no TLS), in the order
// an agent should prefer them. Credentials go into the ICE server entry,
// not the URL.
func URLs(host string, port, tlsPort int) []string {
	hp := net.JoinHostPort(host, strconv.Itoa(port))
	urls := []string{
		"stun:" + hp,
		"turn:" + hp + "?transport=udp",
		"turn:" + hp + "?transport=tcp",
	}
	if tlsPort != 0 {
		urls = append(urls, "turns:"+net.JoinHostPort(host, strconv.Itoa(tlsPort))+"?transport=tcp")
	}
	return urls
}

// listen binds workers UDP sockets on addr (sharing the port) and, if
// withTCP, a TCP listener on the same port. With port 0 the kernel picks a
// port free for both.
func listen(addr string, workers int, withTCP bool) ([]*net.UDPConn, net.Listener, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, nil, fmt.Errorf("relay: listen address %q: %w", addr, err)
	}
	var lastErr error
	for attempt := 0; attempt < 8; attempt++ {
		conns, ln, err := listenOnce(host, port, workers, withTCP)
		if err == nil {
			return conns, ln, nil
		}
		lastErr = err
		if port != "0" {
			break
		}
	}
	return nil, nil, lastErr
}

func listenOnce(host, port string, workers int, withTCP bool) ([]*net.UDPConn, net.Listener, error) {
	lc := net.ListenConfig{}
	if workers > 1 {
		lc.Control = controlReusePort
	}
	ctx := context.Background()
	var conns []*net.UDPConn
	closeAll := func() {
		for _, c := range conns {
			c.Close()
		}
	}
	for i := 0; i < workers; i++ {
		pc, err := lc.ListenPacket(ctx, "udp", net.JoinHostPort(host, port))
		if err != nil {
			closeAll()
			return nil, nil, fmt.Errorf("relay: listen udp %s: %w", net.JoinHostPort(host, port), err)
		}
		uc := pc.(*net.UDPConn)
		tuneUDP(uc)
		conns = append(conns, uc)
		port = strconv.Itoa(uc.LocalAddr().(*net.UDPAddr).Port)
	}
	if !withTCP {
		return conns, nil, nil
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(host, port))
	if err != nil {
		closeAll()
		return nil, nil, fmt.Errorf("relay: listen tcp %s: %w", net.JoinHostPort(host, port), err)
	}
	return conns, ln, nil
}

func tuneUDP(uc *net.UDPConn) { sockbuf.Set(uc, socketBuffer) }
