package agent

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"

	"go.uber.org/zap"

	controlv1 "meshd/api/control/v1"
	"meshd/internal/keys"
)

// hub is an in-memory control: peers join with a setup key and every peer
// sees every other one that is not hidden from it.
type hub struct {
	mu       sync.Mutex
	setupKey string
	joined   map[keys.Key]*controlv1.SelfConfig
	order    []keys.Key
	hidden   map[[2]keys.Key]bool // {viewer, peer}
	relays   []*controlv1.RelayServer
	rules    []*controlv1.FirewallRule
	sigURL   string
	serial   uint64
	down     bool
	changed  chan struct{} // closed and replaced on every change
	logins   int
	expired  map[keys.Key]bool // peers whose login expired
	ctlURLs  []string          // the control replicas maps name
}

// errExpired is control's refusal of a peer whose login expired.
var errExpired = &refusalError{err: errors.New("login expired: run meshd up --setup-key KEY"),
	kinds: []error{ErrNeedsLogin, ErrLoginExpired}}

// setExpired expires a peer's login (its Sync ends) or lifts that.
func (h *hub) setExpired(k keys.Key, expired bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.expired == nil {
		h.expired = map[keys.Key]bool{}
	}
	h.expired[k] = expired
	h.bump()
}

func newHub(setupKey string) *hub {
	return &hub{setupKey: setupKey, joined: map[keys.Key]*controlv1.SelfConfig{}, hidden: map[[2]keys.Key]bool{},
		sigURL: "fake://signal", changed: make(chan struct{})}
}

func (h *hub) bump() {
	h.serial++
	close(h.changed)
	h.changed = make(chan struct{})
}

func (h *hub) setDown(down bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.down = down
	h.bump()
}

func (h *hub) hide(viewer, peer keys.Key, hidden bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.hidden[[2]keys.Key{viewer, peer}] = hidden
	h.bump()
}

func (h *hub) setRelays(r []*controlv1.RelayServer) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.relays = r
	h.bump()
}

func (h *hub) login(k keys.Key, setupKey string) (*controlv1.SelfConfig, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.logins++
	if h.down {
		return nil, errors.New("dial tcp 127.0.0.1:1: connect: connection refused")
	}
	// Like control, a setup key that is given must be valid, even for a
	// peer that joined before.
	if setupKey != "" && setupKey != h.setupKey {
		return nil, fmt.Errorf("setup key unknown: %w", ErrRefused)
	}
	if s, ok := h.joined[k]; ok {
		if h.expired[k] && setupKey == "" {
			return nil, errExpired
		}
		return s, nil
	}
	if setupKey == "" {
		return nil, fmt.Errorf("unknown peer: %w", ErrNeedsLogin)
	}
	n := len(h.joined) + 1
	s := &controlv1.SelfConfig{
		PeerId: fmt.Sprint(n), Name: fmt.Sprintf("peer%d", n), DnsName: fmt.Sprintf("peer%d.mesh.test", n),
		OverlayIp: fmt.Sprintf("100.64.0.%d", n), OverlayNetwork: "100.64.0.0/16", PublicKey: k.String(), Mtu: 1280,
	}
	h.joined[k] = s
	h.order = append(h.order, k)
	h.bump()
	return s, nil
}

func (h *hub) mapFor(k keys.Key) *controlv1.NetworkMap {
	m := &controlv1.NetworkMap{Serial: h.serial, Self: h.joined[k], Relays: h.relays, SignalUrl: h.sigURL, FirewallRules: h.rules,
		ControlUrls: h.ctlURLs}
	for _, o := range h.order {
		if o == k || h.hidden[[2]keys.Key{k, o}] {
			continue
		}
		s := h.joined[o]
		m.Peers = append(m.Peers, &controlv1.RemotePeer{PublicKey: s.PublicKey, Name: s.Name, DnsName: s.DnsName,
			OverlayIp: s.OverlayIp, AllowedIps: []string{s.OverlayIp + "/32"}, Online: true})
	}
	return m
}

// fakeControl is one agent's client of the hub.
type fakeControl struct {
	h    *hub
	key  keys.Key
	mu   sync.Mutex
	conn bool
}

func (c *fakeControl) Login(_ context.Context, setupKey string) (*controlv1.SelfConfig, error) {
	return c.h.login(c.key, setupKey)
}

func (c *fakeControl) Sync(ctx context.Context, onMap func(*controlv1.NetworkMap)) error {
	var last uint64
	for {
		c.h.mu.Lock()
		if c.h.expired[c.key] {
			c.h.mu.Unlock()
			return errExpired
		}
		down, ch := c.h.down, c.h.changed
		var m *controlv1.NetworkMap
		if !down && c.h.serial != last {
			m = c.h.mapFor(c.key)
			last = c.h.serial
		}
		c.h.mu.Unlock()
		c.mu.Lock()
		c.conn = !down
		c.mu.Unlock()
		if m != nil {
			onMap(m)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-ch:
		}
	}
}

func (c *fakeControl) Status() ServerStatus {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn {
		return ServerStatus{URL: "fake://control", State: StateConnected}
	}
	return ServerStatus{URL: "fake://control", State: StateConnecting, Error: "connection refused"}
}

// bus is an in-memory signal.
type bus struct {
	mu    sync.Mutex
	boxes map[keys.Key]chan [2][]byte // {from, payload}
	down  bool
	why   string // added to the error of a send refused while down
	sent  int
}

func newBus() *bus { return &bus{boxes: map[keys.Key]chan [2][]byte{}} }

type fakeSignal struct {
	b       *bus
	key     keys.Key
	mu      sync.Mutex
	handler func(keys.Key, []byte)
	box     chan [2][]byte
	ready   chan struct{}
}

func (s *fakeSignal) OnMessage(fn func(keys.Key, []byte)) {
	s.mu.Lock()
	s.handler = fn
	s.mu.Unlock()
}

func (s *fakeSignal) Run(ctx context.Context) error {
	s.b.mu.Lock()
	s.b.boxes[s.key] = s.box
	s.b.mu.Unlock()
	close(s.ready)
	defer func() {
		s.b.mu.Lock()
		if s.b.boxes[s.key] == s.box {
			delete(s.b.boxes, s.key)
		}
		s.b.mu.Unlock()
	}()
	for {
		select {
		case <-ctx.Done():
			return nil
		case m := <-s.box:
			from, _ := keys.FromBytes(m[0])
			s.mu.Lock()
			fn := s.handler
			s.mu.Unlock()
			if fn != nil {
				fn(from, m[1])
			}
		}
	}
}

func (s *fakeSignal) WaitConnected(ctx context.Context) error {
	select {
	case <-s.ready:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *fakeSignal) Send(_ context.Context, to keys.Key, payload []byte) error {
	s.b.mu.Lock()
	defer s.b.mu.Unlock()
	box, ok := s.b.boxes[to]
	if !ok || s.b.down {
		return fmt.Errorf("send to %s: %w%s", to, ErrPeerOffline, s.b.why)
	}
	s.b.sent++
	select {
	case box <- [2][]byte{slices.Clone(s.key[:]), slices.Clone(payload)}:
		return nil
	default:
		return errors.New("queue full")
	}
}

func (s *fakeSignal) Status() ServerStatus {
	return ServerStatus{URL: "fake://signal", State: StateConnected}
}

// fakeClients returns Clients backed by h and b.
func fakeClients(h *hub, b *bus) Clients {
	return Clients{
		Control: func(c ControlConfig) (Control, error) { return &fakeControl{h: h, key: c.Private.Public()}, nil },
		Signal: func(c SignalConfig) (Signal, error) {
			return &fakeSignal{b: b, key: c.Private.Public(), box: make(chan [2][]byte, 1024), ready: make(chan struct{})}, nil
		},
	}
}

var _ = zap.NewNop
