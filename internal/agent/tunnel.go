package agent

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/transport/v3"
	"go.uber.org/zap"

	controlv1 "meshd/api/control/v1"
	peerv1 "meshd/api/peer/v1"
	"meshd/internal/filter"
	"meshd/internal/keys"
	"meshd/internal/proxy"
	"meshd/nat/peerconn"
	"meshd/wg"
)

// Tunnel timings.
const (
	statsInterval   = time.Second
	netmonInterval  = 3 * time.Second
	loginBackoffMin = 500 * time.Millisecond
	loginBackoffMax = 30 * time.Second
	keepalive       = 25 * time.Second
	earlyTTL        = 5 * time.Second
	earlyMax        = 256
	earlyPerPeer    = 32
)

type earlyMsg struct {
	at time.Time
	m  *peerv1.Message
}

// errRestart asks the engine to bring the tunnel down and up again (the
// overlay address changed).
var errRestart = errors.New("tunnel must restart")

// tunnel is one "up" lifetime: login, the device, the sync stream, the
// signal client and a worker per peer. The engine makes a new one on every
// `meshd up` and drops it on `meshd down`.
type tunnel struct {
	e   *Engine
	log *zap.Logger
	ctl Control

	mu      sync.RWMutex // guards what status and the signal handler read
	self    *controlv1.SelfConfig
	dev     wg.Device
	mux     *peerconn.Mux
	tnet    transport.Net   // what the mux lists local addresses through
	guard   *peerconn.Guard // addresses no path may use (loopguard.go)
	sig     Signal
	sigURL  string
	sigPin  string
	sigStop context.CancelFunc
	sigDone chan struct{}
	svc     *services // routes served and the mesh resolver (services.go)
	fwd     *forwards // Options.Forwards on the overlay address (proxy.go)
	peers   map[keys.Key]*peerWorker
	// early holds messages from peers that are not (yet) in our map: the
	// peer's map often arrives before ours, and its first offer must not be
	// lost. Bounded, and forgotten after earlyTTL.
	early   map[keys.Key][]earlyMsg
	nEarly  int
	stats   map[keys.Key]wg.PeerStats
	stun    []string // the map's STUN servers, for status (ping.go)
	phase   string   // "connecting", "up", "needs-login"
	message string

	// Owned by run.
	serial  uint64
	servers peerconn.Servers
	filter  *filter.Filter
	maps    chan *controlv1.NetworkMap // latest map only
	addrs   []netip.Addr
	pqMode  string // the account's post-quantum mode, from the newest map

	// ticket is control's newest signal ticket for this peer (from the
	// map), which the signal client shows at each registration.
	ticket atomic.Pointer[[]byte]
	// view is what the newest map lets the proxies reach (proxy.go).
	view atomic.Pointer[proxy.View]
}

func newTunnel(e *Engine) *tunnel {
	return &tunnel{
		e:      e,
		log:    e.log,
		peers:  make(map[keys.Key]*peerWorker),
		early:  make(map[keys.Key][]earlyMsg),
		stats:  make(map[keys.Key]wg.PeerStats),
		phase:  "connecting",
		maps:   make(chan *controlv1.NetworkMap, 1),
		filter: filter.New(nil),
	}
}

func (t *tunnel) setPhase(phase, msg string) {
	t.mu.Lock()
	t.phase, t.message = phase, msg
	t.mu.Unlock()
}

// run brings the tunnel up and keeps it until ctx ends. It returns
// ErrNeedsLogin (or ErrRefused) when control wants a setup key, errRestart
// when the tunnel must be rebuilt, nil when ctx ended.
func (t *tunnel) run(ctx context.Context, setupKey string) error {
	defer t.teardown()
	// Before login: a machine that cannot run must not register a peer.
	if check := t.e.opts.Check; check != nil {
		if err := check(ctx, t.e.opts.Device); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			t.setPhase("stopped", err.Error())
			return &fatalError{err: err}
		}
	}
	self, err := t.login(ctx, setupKey)
	if err != nil {
		return err
	}
	if err := t.open(ctx, self); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		t.setPhase("stopped", err.Error())
		return &fatalError{err: err}
	}
	t.setPhase("up", "")
	syncErr := make(chan error, 1)
	stopSync := t.startSync(ctx, t.ctl, syncErr)
	defer func() { stopSync() }()
	defer t.startPathReports(ctx)()

	statsTick := time.NewTicker(statsInterval)
	defer statsTick.Stop()
	netTick := time.NewTicker(netmonInterval)
	defer netTick.Stop()
	t.addrs = localAddrs(t.exclude())
	for {
		select {
		case <-ctx.Done():
			return nil
		case m := <-t.maps:
			t.e.rememberControlURLs(m.GetControlUrls())
			if err := t.apply(ctx, m); err != nil {
				if errors.Is(err, errRestart) {
					return err
				}
				t.log.Warn("apply map", zap.Uint64("serial", m.GetSerial()), zap.Error(err))
			}
		case err := <-syncErr:
			// Control refused us for good (the peer was deleted, or its
			// login expired): the tunnel goes, the identity stays.
			t.log.Error("control ended the session", zap.Error(err))
			t.setPhase("needs-login", err.Error())
			return err
		case <-statsTick.C:
			t.pollStats()
		case <-netTick.C:
			if a := localAddrs(t.exclude()); !slices.Equal(a, t.addrs) {
				gone := missing(t.addrs, a)
				t.log.Info("network changed; looking for direct paths", zap.Any("addrs", a), zap.Any("gone", gone))
				t.addrs = a
				// Streams from the old address are dead but take a while
				// to notice: connect afresh (new clients, new connections),
				// signal first, since the new ICE sessions need it.
				t.mu.RLock()
				url, pin := t.sigURL, t.sigPin
				t.mu.RUnlock()
				t.signal(ctx, url, pin, true)
				t.renewMux(gone)
				if ctl, err := t.newControl(); err == nil {
					stopSync()
					t.mu.Lock()
					t.ctl = ctl
					t.mu.Unlock()
					stopSync = t.startSync(ctx, ctl, syncErr)
				}
			}
		}
	}
}

// startSync runs ctl's Sync stream, feeding t.maps, until the returned stop
// is called (it waits for the stream to end). A refusal goes to errc.
func (t *tunnel) startSync(ctx context.Context, ctl Control, errc chan<- error) (stop func()) {
	sctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		err := ctl.Sync(sctx, func(m *controlv1.NetworkMap) {
			select { // keep only the newest map
			case <-t.maps:
			default:
			}
			t.maps <- m
		})
		if err != nil && sctx.Err() == nil {
			select {
			case errc <- err:
			default:
			}
		}
	}()
	return func() { cancel(); <-done }
}

func (t *tunnel) newControl() (Control, error) {
	e := t.e
	return e.opts.Clients.Control(ControlConfig{URL: e.controlURL(), URLs: e.controlURLs(), Pin: e.controlPin(), Private: e.priv, Meta: e.meta(), Log: e.log.Named("control")})
}

// login logs in, retrying with backoff and jitter while control is
// unreachable. A refusal ends it.
func (t *tunnel) login(ctx context.Context, setupKey string) (*controlv1.SelfConfig, error) {
	e := t.e
	ctl, err := t.newControl()
	if err != nil {
		return nil, fmt.Errorf("control client: %w", err)
	}
	t.mu.Lock()
	t.ctl = ctl
	t.mu.Unlock()
	backoff := loginBackoffMin
	var logins loginLog
	// A machine that joined before logs in with its key alone: the setup
	// key (often still on the command line) may be a used one-off key.
	e.mu.Lock()
	joined := e.st.Joined
	e.mu.Unlock()
	for {
		key := setupKey
		if joined || key == ssoKey {
			key = ""
		}
		var self *controlv1.SelfConfig
		if setupKey == ssoKey && e.ssoWanted() {
			self, err = t.loginSSO(ctx, ctl)
		} else {
			self, err = ctl.Login(ctx, key)
		}
		if joined && setupKey != "" && setupKey != ssoKey && errors.Is(err, ErrNeedsLogin) {
			self, err = ctl.Login(ctx, setupKey)
		}
		if err == nil {
			e.loggedIn(self)
			t.log.Info(fmt.Sprintf("joined as %s %s", self.GetName(), self.GetOverlayIp()), zap.String("dns_name", self.GetDnsName()))
			return self, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if errors.Is(err, ErrNeedsLogin) || errors.Is(err, ErrRefused) {
			t.setPhase("needs-login", err.Error())
			return nil, err
		}
		d := backoff/2 + rand.N(backoff/2+1)
		msg := fmt.Sprintf("cannot log in to control (retrying in %s): %v", d.Round(time.Millisecond), err)
		if hint := loginHint(err, e.controlURL()); hint != "" {
			msg += "; " + hint
		}
		t.setPhase("connecting", msg)
		lvl, logMsg := logins.failed(err, e.controlURL())
		t.log.Log(lvl, logMsg, zap.Error(err), zap.Duration("in", d))
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(d):
		}
		backoff = min(backoff*2, loginBackoffMax)
	}
}

// open makes the device and the ICE mux.
func (t *tunnel) open(ctx context.Context, self *controlv1.SelfConfig) error {
	addr, err := overlayPrefix(self)
	if err != nil {
		return err
	}
	cfg := t.e.opts.Device
	cfg.PrivateKey = t.e.priv
	cfg.Address = addr
	if self.GetMtu() > 0 && cfg.MTU == 0 {
		cfg.MTU = int(self.GetMtu())
	}
	if cfg.Log == nil {
		cfg.Log = t.log.Named("wg")
	}
	if cfg.Filter == nil {
		cfg.Filter = t.filter // the map's firewall rules, on every packet
	}
	dev, err := t.e.opts.NewDevice(ctx, cfg)
	if err != nil {
		return fmt.Errorf("wireguard device: %w", err)
	}
	// The mux lists local addresses for host candidates (IPv4 and IPv6):
	// not the overlay's. Link-local addresses need a zone and are useless
	// to the remote.
	exclude := []netip.Prefix{addr.Masked(), netip.MustParsePrefix("fe80::/10"), netip.MustParsePrefix("169.254.0.0/16")}
	if !t.e.opts.IncludeLoopback {
		exclude = append(exclude, netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128"))
	}
	tnet, err := peerconn.ExcludingNet(t.e.opts.ICENet, exclude)
	if err != nil {
		dev.Close()
		return err
	}
	mux := peerconn.NewMux(dev.STUNConn(), tnet, t.log.Named("ice"))
	guard := newGuard(addr, mux, dev)
	svc := newServices(t.log, t.e.opts.DNS, dev, addr)
	fwd := startForwards(t.log, dev, addr.Addr(), t.e.opts.Forwards)
	t.mu.Lock()
	t.self, t.dev, t.mux, t.tnet, t.svc, t.guard, t.fwd = self, dev, mux, tnet, svc, guard, fwd
	t.mu.Unlock()
	if t.e.opts.OnDevice != nil {
		t.e.opts.OnDevice(dev, t.filter)
	}
	return nil
}

func overlayPrefix(self *controlv1.SelfConfig) (netip.Prefix, error) {
	ip, err := netip.ParseAddr(self.GetOverlayIp())
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("control gave overlay ip %q: %w", self.GetOverlayIp(), err)
	}
	bits := ip.BitLen()
	if n, err := netip.ParsePrefix(self.GetOverlayNetwork()); err == nil && n.Contains(ip) {
		bits = n.Bits()
	}
	return netip.PrefixFrom(ip, bits), nil
}

// teardown stops everything the tunnel started, the device last.
func (t *tunnel) teardown() {
	t.mu.Lock()
	peers := t.peers
	t.peers = make(map[keys.Key]*peerWorker)
	sigStop, sigDone := t.sigStop, t.sigDone
	t.sig, t.sigStop, t.sigDone = nil, nil, nil
	dev, mux, svc, fwd := t.dev, t.mux, t.svc, t.fwd
	t.dev, t.mux, t.fwd = nil, nil, nil
	t.mu.Unlock()
	t.view.Store(nil)
	fwd.close()
	var wg sync.WaitGroup
	for _, w := range peers {
		wg.Add(1)
		go func() { defer wg.Done(); w.stop() }()
	}
	wg.Wait()
	if sigStop != nil {
		sigStop()
		<-sigDone
	}
	if mux != nil {
		mux.Close()
	}
	svc.close() // routing rules and the resolver go before the interface
	if dev != nil {
		if err := dev.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			t.log.Warn("close device", zap.Error(err))
		}
	}
}

// apply brings the tunnel in line with a map.
func (t *tunnel) apply(ctx context.Context, m *controlv1.NetworkMap) error {
	if m.GetSerial() < t.serial {
		t.log.Debug("older map dropped", zap.Uint64("serial", m.GetSerial()), zap.Uint64("have", t.serial))
		return nil
	}
	t.serial = m.GetSerial()
	var errs []error
	if s := m.GetSelf(); s != nil {
		t.mu.RLock()
		old := t.self
		t.mu.RUnlock()
		if s.GetOverlayIp() != old.GetOverlayIp() || s.GetOverlayNetwork() != old.GetOverlayNetwork() {
			t.log.Warn("overlay address changed; restarting the tunnel", zap.String("old", old.GetOverlayIp()), zap.String("new", s.GetOverlayIp()))
			return errRestart
		}
		t.mu.Lock()
		t.self = s
		t.mu.Unlock()
		t.e.loggedIn(s)
	}
	servers, err := peerconn.ParseServers(relayServers(m.GetRelays()))
	if err != nil {
		errs = append(errs, err)
	}
	serversChanged := !servers.Equal(t.servers)
	t.servers = servers
	t.mu.Lock()
	t.stun = stunURLs(servers)
	t.mu.Unlock()
	rules, err := filter.Compile(firewallRules(m))
	if err != nil {
		errs = append(errs, err)
	}
	t.filter.SetRules(rules)
	t.filter.Sweep()
	t.view.Store(proxy.NewView(m, rules))
	t.mu.RLock()
	fw, ok := t.dev.(wg.FirewallDevice) // kernel mode: the same rules as nftables rules
	t.mu.RUnlock()
	if ok {
		if err := fw.SetFirewall(rules); err != nil {
			errs = append(errs, err)
		}
	}
	if tk := m.GetSignalTicket(); len(tk) > 0 {
		t.ticket.Store(&tk)
	}
	if t.pqMode != m.GetPostQuantum() {
		t.log.Info("post-quantum mode", zap.String("mode", m.GetPostQuantum()))
		t.pqMode = m.GetPostQuantum()
	}
	t.signal(ctx, m.GetSignalUrl(), m.GetSignalTlsPin(), false)
	t.setGuard(m) // before the peers' routes exist
	t.svc.apply(ctx, m)

	// Peers: add, update, remove. One peer's change never touches another.
	self := t.e.priv.Public()
	want := make(map[keys.Key]*controlv1.RemotePeer, len(m.GetPeers()))
	for _, rp := range m.GetPeers() {
		k, err := keys.ParsePublic(rp.GetPublicKey())
		if err != nil || k == self {
			if err != nil {
				errs = append(errs, fmt.Errorf("peer %q: %w", rp.GetName(), err))
			}
			continue
		}
		want[k] = rp
	}
	t.mu.RLock()
	var gone []keys.Key
	for k := range t.peers {
		if _, ok := want[k]; !ok {
			gone = append(gone, k)
		}
	}
	t.mu.RUnlock()
	for _, k := range gone {
		t.removePeer(k)
	}
	for k, rp := range want {
		if err := t.setPeer(ctx, k, rp, serversChanged); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (t *tunnel) setPeer(ctx context.Context, k keys.Key, rp *controlv1.RemotePeer, serversChanged bool) error {
	allowed, perr := parsePrefixes(rp.GetAllowedIps())
	if perr != nil {
		perr = fmt.Errorf("peer %s: allowed ips: %w", rp.GetName(), perr)
	}
	t.mu.RLock()
	w := t.peers[k]
	t.mu.RUnlock()
	if w != nil {
		// The worker owns the peer's device configuration from here on.
		w.push(evMeta{meta: rp, allowed: allowed, pqMode: t.pqMode})
		if serversChanged {
			w.push(evServers{servers: t.servers})
		}
		return perr
	}
	// The device applies the keepalive, and starts the first handshake,
	// once the peer has a path.
	if err := t.dev.SetPeer(wg.Peer{PublicKey: k, AllowedIPs: allowed, PersistentKeepalive: keepalive}); err != nil {
		return fmt.Errorf("peer %s: %w", rp.GetName(), err)
	}
	env := peerEnv{
		self:            t.e.priv.Public(),
		dev:             t.dev,
		mux:             t.mux,
		signal:          t.currentSignal,
		includeLoopback: t.e.opts.IncludeLoopback,
		timing:          t.e.opts.ICETiming,
		guard:           t.guard,
		pathCfg:         t.e.opts.Path,
		pqOff:           t.e.opts.PostQuantumOff,
		pqTiming:        t.e.opts.PQTiming,
		log:             t.log.Named("peer"),
	}
	w = startPeer(ctx, env, rp, wg.Peer{PublicKey: k, AllowedIPs: allowed, PersistentKeepalive: keepalive}, t.servers, t.pqMode)
	t.mu.Lock()
	t.peers[k] = w
	early := t.early[k]
	delete(t.early, k)
	t.nEarly -= len(early)
	t.mu.Unlock()
	for _, em := range early {
		if time.Since(em.at) < earlyTTL {
			w.push(evMessage{m: em.m})
		}
	}
	t.log.Info("peer added", zap.String("name", rp.GetName()), zap.Stringer("key", k), zap.Strings("allowed_ips", rp.GetAllowedIps()))
	return perr
}

// removePeer cuts the peer's tunnel first (status shows the peer until
// then), and then waits for its ICE sessions to close, which takes longer.
func (t *tunnel) removePeer(k keys.Key) {
	t.mu.RLock()
	w := t.peers[k]
	t.mu.RUnlock()
	if w == nil {
		return
	}
	w.halt()
	if err := t.dev.RemovePeer(k); err != nil {
		t.log.Warn("remove peer", zap.Stringer("key", k), zap.Error(err))
	}
	t.mu.Lock()
	delete(t.peers, k)
	delete(t.stats, k)
	t.mu.Unlock()
	w.stop()
	t.log.Info("peer removed", zap.String("name", w.snapshot().meta.GetName()), zap.Stringer("key", k))
}

// currentTicket returns the newest signal ticket from control, or nil.
func (t *tunnel) currentTicket() []byte {
	if p := t.ticket.Load(); p != nil {
		return *p
	}
	return nil
}

// signal (re)starts the signal client when the map names another server
// (or when force is set).
func (t *tunnel) signal(ctx context.Context, url, pin string, force bool) {
	t.mu.RLock()
	same := url == t.sigURL && pin == t.sigPin
	t.mu.RUnlock()
	if same && !force {
		return
	}
	t.mu.Lock()
	stop, done := t.sigStop, t.sigDone
	t.sig, t.sigURL, t.sigPin, t.sigStop, t.sigDone = nil, url, pin, nil, nil
	t.mu.Unlock()
	if stop != nil {
		stop()
		<-done
	}
	if url == "" {
		return
	}
	sig, err := t.e.opts.Clients.Signal(SignalConfig{URL: url, Pin: pin, Private: t.e.priv, Log: t.log.Named("signal"),
		Ticket: t.currentTicket})
	if err != nil {
		t.log.Error("signal client", zap.String("url", url), zap.Error(err))
		return
	}
	sig.OnMessage(t.dispatch)
	sctx, cancel := context.WithCancel(ctx)
	d := make(chan struct{})
	go func() {
		defer close(d)
		if err := sig.Run(sctx); err != nil {
			t.log.Error("signal client stopped", zap.Error(err))
		}
	}()
	t.mu.Lock()
	t.sig, t.sigStop, t.sigDone = sig, cancel, d
	t.mu.Unlock()
}

// renewMux rebuilds the ICE mux after a network change (it lists the local
// addresses once, and caches server-reflexive ones) and has every worker
// start a new direct session on it. gone are the local addresses that went
// away: a direct path that does not use them is kept until the new session
// finds one (internal/agent/path).
func (t *tunnel) renewMux(gone []netip.Addr) {
	t.mu.Lock()
	old, dev := t.mux, t.dev
	t.mu.Unlock()
	if dev == nil {
		return
	}
	// Closing the old mux detaches its STUNConn; the device hands out a
	// fresh one for the new mux.
	old.Close()
	mux := peerconn.NewMux(dev.STUNConn(), t.tnet, t.log.Named("ice"))
	mux.SetGuard(t.guard)
	t.mu.Lock()
	t.mux = mux
	t.mu.Unlock()
	t.broadcast(evNetwork{mux: mux, gone: gone})
}

// exclude is the overlay network: never a candidate.
func (t *tunnel) exclude() []netip.Prefix {
	t.mu.RLock()
	defer t.mu.RUnlock()
	if p, err := overlayPrefix(t.self); err == nil {
		return []netip.Prefix{p.Masked()}
	}
	return nil
}

func (t *tunnel) currentSignal() Signal {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.sig
}

// dispatch hands a message from a peer to its worker. Messages from peers
// that are not in the map are dropped: the map decides who may talk to us.
func (t *tunnel) dispatch(from keys.Key, payload []byte) {
	m, err := unmarshalPeer(payload)
	if err != nil {
		t.log.Debug("malformed peer message dropped", zap.Stringer("from", from), zap.Error(err))
		return
	}
	t.mu.Lock()
	w := t.peers[from]
	if w == nil {
		// Not in our map (yet): hold it briefly; it is acted on only if
		// the peer shows up in the map.
		if t.nEarly < earlyMax && len(t.early[from]) < earlyPerPeer {
			t.early[from] = append(t.early[from], earlyMsg{at: time.Now(), m: m})
			t.nEarly++
		}
		t.mu.Unlock()
		t.log.Debug("message from a peer not in the map held", zap.Stringer("from", from))
		return
	}
	t.mu.Unlock()
	w.push(evMessage{m: m})
}

func (t *tunnel) pollStats() {
	t.mu.RLock()
	dev := t.dev
	t.mu.RUnlock()
	if dev == nil {
		return
	}
	st, err := dev.Stats()
	if err != nil {
		t.log.Warn("device stats", zap.Error(err))
		return
	}
	t.mu.Lock()
	for _, s := range st {
		t.stats[s.PublicKey] = s
	}
	for k, ms := range t.early {
		if time.Since(ms[len(ms)-1].at) > earlyTTL {
			delete(t.early, k)
			t.nEarly -= len(ms)
		}
	}
	peers := make([]*peerWorker, 0, len(t.peers))
	for _, w := range t.peers {
		peers = append(peers, w)
	}
	t.mu.Unlock()
	for _, w := range peers {
		t.mu.RLock()
		hs := t.stats[w.key].LastHandshake
		t.mu.RUnlock()
		w.push(evStats{lastHandshake: hs})
	}
}

func (t *tunnel) broadcast(ev any) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	for _, w := range t.peers {
		w.push(ev)
	}
}

// missing returns the addresses of old that are not in cur (both sorted).
func missing(old, cur []netip.Addr) []netip.Addr {
	var out []netip.Addr
	for _, a := range old {
		if _, found := slices.BinarySearchFunc(cur, a, func(x, y netip.Addr) int { return x.Compare(y) }); !found {
			out = append(out, a)
		}
	}
	return out
}

// localAddrs lists the machine's unicast addresses outside the overlay,
// sorted, for noticing a network change.
func localAddrs(exclude []netip.Prefix) []netip.Addr {
	as, err := net.InterfaceAddrs()
	if err != nil {
		return nil
	}
	var out []netip.Addr
	for _, a := range as {
		if n, ok := a.(*net.IPNet); ok {
			ip, ok := netip.AddrFromSlice(n.IP)
			if !ok || ip.IsLoopback() || ip.IsLinkLocalUnicast() || slices.ContainsFunc(exclude, func(p netip.Prefix) bool { return p.Contains(ip.Unmap()) }) {
				continue
			}
			out = append(out, ip.Unmap())
		}
	}
	slices.SortFunc(out, func(a, b netip.Addr) int { return a.Compare(b) })
	return out
}
