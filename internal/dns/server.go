package dns

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mdns "github.com/miekg/dns"
	"go.uber.org/zap"
)

// Defaults of Options.
const (
	// DefaultTimeout bounds one exchange with one upstream server.
	DefaultTimeout = 2 * time.Second
	// DefaultMaxInFlight bounds the queries being forwarded at once; more
	// are answered SERVFAIL at once rather than queued.
	DefaultMaxInFlight = 256
	// maxCNAMEChase bounds how many CNAMEs an answer follows; a longer
	// chain is answered SERVFAIL.
	maxCNAMEChase = 8
)

// ErrClosed is returned by the listen methods after Close.
var ErrClosed = errors.New("dns: server closed")

// Options configure a Server.
type Options struct {
	// Allowed are the client addresses answered; anyone else gets REFUSED.
	// Loopback is always allowed. The agent passes the overlay network.
	Allowed []netip.Prefix
	// System is the fallback resolver (nil: the nameservers of
	// /etc/resolv.conf, read again when it changes). The server's own
	// addresses are never used.
	System []netip.AddrPort
	// ResolvConf is the file System defaults to (tests); "" is
	// /etc/resolv.conf.
	ResolvConf string
	// Timeout bounds one exchange with one upstream (0: DefaultTimeout).
	Timeout time.Duration
	// MaxInFlight bounds concurrent forwarded queries (0: the default).
	MaxInFlight int
	Log         *zap.Logger
}

// Server is the resolver. Make it with New, give it listeners with Listen
// or Serve, feed it configurations with SetConfig, stop it with Close.
// Safe for concurrent use.
type Server struct {
	opts   Options
	log    *zap.Logger
	zone   atomic.Pointer[zone]
	sys    *systemResolvers
	ctx    context.Context
	cancel context.CancelFunc
	slots  chan struct{}

	mu      sync.Mutex
	closed  bool
	addrs   []netip.AddrPort
	servers []*mdns.Server
	closers []func() error
	serving sync.WaitGroup // the serve loops
	queries sync.WaitGroup // queries being answered
}

// New makes a server with an empty configuration (it forwards everything
// to the system resolver until SetConfig).
func New(opts Options) *Server {
	if opts.Log == nil {
		opts.Log = zap.NewNop()
	}
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTimeout
	}
	if opts.MaxInFlight <= 0 {
		opts.MaxInFlight = DefaultMaxInFlight
	}
	if opts.ResolvConf == "" {
		opts.ResolvConf = "/etc/resolv.conf"
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{opts: opts, log: opts.Log, ctx: ctx, cancel: cancel, slots: make(chan struct{}, opts.MaxInFlight)}
	s.sys = &systemResolvers{fixed: opts.System, path: opts.ResolvConf}
	s.zone.Store(compile(Config{}))
	return s
}

// SetConfig replaces what the server answers; queries in flight finish
// with the old one.
func (s *Server) SetConfig(c Config) { s.zone.Store(compile(c)) }

// Listen serves UDP and TCP on addr (port 0: one free port for both) and
// returns the address it listens on.
func (s *Server) Listen(addr netip.AddrPort) (netip.AddrPort, error) {
	var lastErr error
	for range 5 { // port 0: the UDP port may be taken on TCP; try another
		pc, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(addr))
		if err != nil {
			return netip.AddrPort{}, fmt.Errorf("dns: listen udp %s: %w", addr, err)
		}
		bound := netip.AddrPortFrom(addr.Addr(), pc.LocalAddr().(*net.UDPAddr).AddrPort().Port())
		ln, err := net.ListenTCP("tcp", net.TCPAddrFromAddrPort(bound))
		if err != nil {
			pc.Close()
			lastErr = fmt.Errorf("dns: listen tcp %s: %w", bound, err)
			if addr.Port() != 0 {
				break
			}
			continue
		}
		if err := s.Serve(pc, ln); err != nil {
			return netip.AddrPort{}, err
		}
		return bound, nil
	}
	return netip.AddrPort{}, lastErr
}

// Serve answers on pc and ln (either may be nil), for listeners made
// elsewhere (a netstack's). The server closes them on Close.
func (s *Server) Serve(pc net.PacketConn, ln net.Listener) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		if pc != nil {
			pc.Close()
		}
		if ln != nil {
			ln.Close()
		}
		return ErrClosed
	}
	h := mdns.HandlerFunc(s.serveDNS)
	if pc != nil {
		srv := &mdns.Server{PacketConn: pc, Handler: h}
		s.start(srv, pc.Close)
		if ap, err := netip.ParseAddrPort(pc.LocalAddr().String()); err == nil {
			s.addrs = append(s.addrs, ap)
		}
	}
	if ln != nil {
		srv := &mdns.Server{Listener: ln, Handler: h, ReadTimeout: 5 * time.Second, WriteTimeout: 5 * time.Second}
		s.start(srv, ln.Close)
		if ap, err := netip.ParseAddrPort(ln.Addr().String()); err == nil && !slices.Contains(s.addrs, ap) {
			s.addrs = append(s.addrs, ap)
		}
	}
	return nil
}

// start runs srv; the caller holds s.mu. Closing the listener ends it.
func (s *Server) start(srv *mdns.Server, closeFn func() error) {
	s.servers = append(s.servers, srv)
	s.closers = append(s.closers, closeFn)
	s.serving.Add(1)
	go func() {
		defer s.serving.Done()
		if err := srv.ActivateAndServe(); err != nil && s.ctx.Err() == nil {
			s.log.Warn("dns listener stopped", zap.Error(err))
		}
	}()
}

// Addrs are the addresses the server answers on.
func (s *Server) Addrs() []netip.AddrPort {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.addrs)
}

// Close stops the listeners and waits for the queries in flight (their
// upstream exchanges are cancelled).
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	closers := s.closers
	s.mu.Unlock()
	s.cancel()
	for _, c := range closers {
		c()
	}
	s.serving.Wait()
	s.queries.Wait()
	return nil
}

func (s *Server) serveDNS(w mdns.ResponseWriter, req *mdns.Msg) {
	s.queries.Add(1)
	defer s.queries.Done()
	src := addrOf(w.RemoteAddr())
	resp := s.Resolve(s.ctx, req, src)
	if resp == nil {
		return
	}
	if !isTCP(w.LocalAddr()) {
		resp.Truncate(udpSize(req))
	}
	if err := w.WriteMsg(resp); err != nil {
		s.log.Debug("dns write", zap.Error(err))
	}
}

func isTCP(a net.Addr) bool { return a != nil && strings.HasPrefix(a.Network(), "tcp") }

func udpSize(req *mdns.Msg) int {
	if o := req.IsEdns0(); o != nil && o.UDPSize() > mdns.MinMsgSize {
		return int(o.UDPSize())
	}
	return mdns.MinMsgSize
}

func addrOf(a net.Addr) netip.Addr {
	switch a := a.(type) {
	case *net.UDPAddr:
		return a.AddrPort().Addr().Unmap()
	case *net.TCPAddr:
		return a.AddrPort().Addr().Unmap()
	}
	if a == nil {
		return netip.Addr{}
	}
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

// allowed reports whether src may use the resolver.
func (s *Server) allowed(src netip.Addr) bool {
	if src.IsLoopback() {
		return true
	}
	for _, p := range s.opts.Allowed {
		if p.Contains(src) {
			return true
		}
	}
	return false
}

// Resolve answers req from client src: the heart of the server, also
// usable without a listener. It returns nil only for a message that
// deserves no answer (a response).
func (s *Server) Resolve(ctx context.Context, req *mdns.Msg, src netip.Addr) *mdns.Msg {
	if req.Response {
		return nil
	}
	resp := new(mdns.Msg)
	if !s.allowed(src) {
		return resp.SetRcode(req, mdns.RcodeRefused)
	}
	if req.Opcode != mdns.OpcodeQuery {
		return resp.SetRcode(req, mdns.RcodeNotImplemented)
	}
	if len(req.Question) != 1 {
		return resp.SetRcode(req, mdns.RcodeFormatError)
	}
	q := req.Question[0]
	name := strings.ToLower(q.Name)
	z := s.zone.Load()
	if rrs, ok := z.lookup(name); ok && q.Qclass == mdns.ClassINET {
		return s.answerLocal(ctx, z, req, name, rrs)
	}
	if z.authoritative(name) {
		resp.SetRcode(req, mdns.RcodeNameError)
		resp.Authoritative = true
		if soa := z.soa(); soa != nil {
			resp.Ns = []mdns.RR{soa}
		}
		return resp
	}
	// Names in the mesh domain (a group's longer match domain) never fall
	// back to the system resolver: with systemd-resolved that would send
	// them straight back here.
	out, err := s.forward(ctx, req, z.upstreams(name), !z.inDomain(name))
	if err != nil {
		s.log.Debug("dns forward failed", zap.String("name", name), zap.Error(err))
		return resp.SetRcode(req, mdns.RcodeServerFailure)
	}
	out.Id = req.Id
	return out
}

// answerLocal answers a name the mesh knows.
func (s *Server) answerLocal(ctx context.Context, z *zone, req *mdns.Msg, name string, rrs []mdns.RR) *mdns.Msg {
	resp := new(mdns.Msg)
	resp.SetReply(req)
	resp.Authoritative = true
	resp.RecursionAvailable = true
	qt := req.Question[0].Qtype
	for _, rr := range rrs {
		if t := rr.Header().Rrtype; t == qt || qt == mdns.TypeANY || t == mdns.TypeCNAME {
			rr = mdns.Copy(rr)
			rr.Header().Name = req.Question[0].Name // keep the client's case
			resp.Answer = append(resp.Answer, rr)
		}
	}
	// Follow a CNAME chain: in the mesh, or upstream. A chain longer than
	// maxCNAMEChase (a loop is one) is a broken zone: SERVFAIL, as a
	// recursive resolver answers, rather than a chain of CNAMEs that ends
	// nowhere.
	for i := 0; qt != mdns.TypeCNAME && len(resp.Answer) > 0; i++ {
		c, ok := resp.Answer[len(resp.Answer)-1].(*mdns.CNAME)
		if !ok {
			break
		}
		target := strings.ToLower(c.Target)
		if i >= maxCNAMEChase {
			s.log.Debug("dns cname loop or chain too long", zap.String("name", name), zap.String("target", target))
			fail := new(mdns.Msg)
			return fail.SetRcode(req, mdns.RcodeServerFailure)
		}
		if next, ok := z.lookup(target); ok {
			chained := false
			for _, rr := range next {
				t := rr.Header().Rrtype
				if t == qt || qt == mdns.TypeANY || t == mdns.TypeCNAME {
					resp.Answer = append(resp.Answer, rr)
					chained = chained || t == mdns.TypeCNAME
				}
			}
			if !chained {
				break
			}
			continue
		}
		if z.authoritative(target) {
			break
		}
		sub := new(mdns.Msg)
		sub.SetQuestion(target, qt)
		sub.RecursionDesired = true
		if out, err := s.forward(ctx, sub, z.upstreams(target), !z.inDomain(target)); err == nil {
			resp.Answer = append(resp.Answer, out.Answer...)
		}
		break
	}
	if len(resp.Answer) == 0 {
		if soa := z.soa(); soa != nil {
			resp.Ns = []mdns.RR{soa}
		}
	}
	return resp
}
