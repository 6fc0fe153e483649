package relay

import (
	"net/http"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/pion/stun/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics are plain atomics updated on the serving paths and turned into
// Prometheus metrics only when scraped. Bytes relayed live in each
// allocation (no shared cache line per packet) and are summed at scrape.
type metrics struct {
	allocs      map[string]*atomic.Int64 // by transport
	allocsTotal map[string]*atomic.Uint64
	conns       map[string]*atomic.Int64 // tcp, tls

	connsRefused atomic.Uint64
	peerDenied   atomic.Uint64

	closedToPeer, closedFromPeer         atomic.Uint64
	closedPktsToPeer, closedPktsFromPeer atomic.Uint64

	requests [len(methodNames)]atomic.Uint64

	gsoSends, gsoPackets atomic.Uint64 // batched sends to clients
	internalDrops        atomic.Uint64 // between two of our allocations: the receiver's queue was full

	mu          sync.Mutex
	refusals    map[string]uint64 // quota, capacity, ports; expired, revoked (ended)
	authRefusal map[string]uint64 // expired, malformed, realm, no_secret, revoked
	errors      map[int]uint64    // error responses by code
}

var transports = []string{transportUDP, transportTCP, transportTLS}

// methodNames index metrics.requests.
var methodNames = [...]string{"binding", "allocate", "refresh", "send", "data", "create_permission", "channel_bind", "other"}

func methodIndex(m stun.Method) int {
	switch m {
	case stun.MethodBinding:
		return 0
	case stun.MethodAllocate:
		return 1
	case stun.MethodRefresh:
		return 2
	case stun.MethodSend:
		return 3
	case stun.MethodData:
		return 4
	case stun.MethodCreatePermission:
		return 5
	case stun.MethodChannelBind:
		return 6
	}
	return 7
}

func newMetrics() *metrics {
	m := &metrics{
		allocs:      map[string]*atomic.Int64{},
		allocsTotal: map[string]*atomic.Uint64{},
		conns:       map[string]*atomic.Int64{},
		refusals:    map[string]uint64{},
		authRefusal: map[string]uint64{},
		errors:      map[int]uint64{},
	}
	for _, t := range transports {
		m.allocs[t] = new(atomic.Int64)
		m.allocsTotal[t] = new(atomic.Uint64)
		m.conns[t] = new(atomic.Int64)
	}
	return m
}

func (m *metrics) request(method stun.Method) { m.requests[methodIndex(method)].Add(1) }

func (m *metrics) allocated(transport string) {
	m.allocs[transport].Add(1)
	m.allocsTotal[transport].Add(1)
}

func (m *metrics) deallocated(transport string) { m.allocs[transport].Add(-1) }

func (m *metrics) refused(reason string) {
	m.mu.Lock()
	m.refusals[reason]++
	m.mu.Unlock()
}

func (m *metrics) authRefused(reason string) {
	m.mu.Lock()
	m.authRefusal[reason]++
	m.mu.Unlock()
}

func (m *metrics) errorResponse(code int) {
	m.mu.Lock()
	m.errors[code]++
	m.mu.Unlock()
}

// Stats is a snapshot of the relay for status output.
type Stats struct {
	// Allocations is the number of live allocations, by client transport
	// in AllocationsByTransport.
	Allocations            int
	AllocationsByTransport map[string]int
	// AllocationsTotal counts allocations made since start.
	AllocationsTotal uint64
	// Users is the number of credential ids holding allocations.
	Users int
	// Conns is the number of TCP and TLS client connections.
	Conns int
	// Refused counts refused allocations by reason: quota, capacity,
	// ports; and allocations the relay ended: expired (their id's newest
	// credential expired unrenewed), revoked (Options.UserValid).
	Refused map[string]uint64
	// AuthRefused counts refused credentials by reason: expired,
	// malformed, realm, no_secret, revoked (Options.UserValid). (Wrong passwords show as error 400 in
	// ErrorResponses.)
	AuthRefused map[string]uint64
	// ErrorResponses counts STUN error responses sent, by code (401 is the
	// normal first answer of the long-term credential handshake).
	ErrorResponses map[int]uint64
	// BytesToPeers and BytesFromPeers are payload bytes relayed from
	// clients to peers and from peers to clients.
	BytesToPeers, BytesFromPeers     uint64
	PacketsToPeers, PacketsFromPeers uint64
	// PeersDenied counts permissions and channels refused by the peer
	// policy, and packets dropped on their way to the relay's own address
	// outside its relayed addresses.
	PeersDenied uint64
	// BatchedSends is how many UDP GSO writes carried BatchedPackets
	// ChannelData packets to clients.
	BatchedSends, BatchedPackets uint64
	// QueueDrops counts datagrams dropped between two allocations of this
	// relay because the receiving one's queue was full (its client reads
	// too slowly), as a socket buffer would drop them.
	QueueDrops uint64
}

// Stats returns a snapshot of the counters.
func (s *Server) Stats() Stats {
	st := Stats{
		AllocationsByTransport: map[string]int{},
		Refused:                map[string]uint64{},
		AuthRefused:            map[string]uint64{},
		ErrorResponses:         map[int]uint64{},
		PeersDenied:            s.m.peerDenied.Load(),
		BatchedSends:           s.m.gsoSends.Load(),
		BatchedPackets:         s.m.gsoPackets.Load(),
		QueueDrops:             s.m.internalDrops.Load(),
	}
	for _, t := range transports {
		n := int(s.m.allocs[t].Load())
		st.AllocationsByTransport[t] = n
		st.Allocations += n
		st.AllocationsTotal += s.m.allocsTotal[t].Load()
		st.Conns += int(s.m.conns[t].Load())
	}
	s.mu.Lock()
	st.Users = len(s.users)
	st.BytesToPeers = s.m.closedToPeer.Load()
	st.BytesFromPeers = s.m.closedFromPeer.Load()
	st.PacketsToPeers = s.m.closedPktsToPeer.Load()
	st.PacketsFromPeers = s.m.closedPktsFromPeer.Load()
	for rc := range s.allocs {
		st.BytesToPeers += rc.toPeer.Load()
		st.BytesFromPeers += rc.fromPeer.Load()
		st.PacketsToPeers += rc.pktsToPeer.Load()
		st.PacketsFromPeers += rc.pktsFromPeer.Load()
	}
	s.mu.Unlock()
	s.m.mu.Lock()
	for k, v := range s.m.refusals {
		st.Refused[k] = v
	}
	for k, v := range s.m.authRefusal {
		st.AuthRefused[k] = v
	}
	for k, v := range s.m.errors {
		st.ErrorResponses[k] = v
	}
	s.m.mu.Unlock()
	return st
}

// Metric descriptions.
var (
	descAllocs = prometheus.NewDesc("meshd_relay_allocations",
		"Live TURN allocations, by client transport.", []string{"transport"}, nil)
	descAllocsTotal = prometheus.NewDesc("meshd_relay_allocations_total",
		"TURN allocations made, by client transport.", []string{"transport"}, nil)
	descRefused = prometheus.NewDesc("meshd_relay_allocations_refused_total",
		"Allocations refused, by reason (quota, capacity, ports), or ended by the relay (expired: the newest credential of their id expired unrenewed; revoked: their peer may no longer use the relay).", []string{"reason"}, nil)
	descUsers = prometheus.NewDesc("meshd_relay_users",
		"Credential ids holding allocations.", nil, nil)
	descConns = prometheus.NewDesc("meshd_relay_connections",
		"TURN client connections over TCP and TLS.", []string{"transport"}, nil)
	descConnsRefused = prometheus.NewDesc("meshd_relay_connections_refused_total",
		"TCP/TLS connections closed at once because the relay had MaxConns.", nil, nil)
	descBytes = prometheus.NewDesc("meshd_relay_bytes_total",
		"Payload bytes relayed, by direction (to_peer: from clients to peers; from_peer: from peers to clients).", []string{"direction"}, nil)
	descPackets = prometheus.NewDesc("meshd_relay_packets_total",
		"Datagrams relayed, by direction.", []string{"direction"}, nil)
	descRequests = prometheus.NewDesc("meshd_relay_stun_messages_total",
		"STUN messages received from clients, by method (ChannelData not included).", []string{"method"}, nil)
	descErrors = prometheus.NewDesc("meshd_relay_error_responses_total",
		"STUN error responses sent, by code (401 is the normal credential challenge).", []string{"code"}, nil)
	descAuth = prometheus.NewDesc("meshd_relay_auth_refused_total",
		"Credentials refused before the integrity check, by reason (expired, malformed, realm, no_secret, revoked).", []string{"reason"}, nil)
	descDenied = prometheus.NewDesc("meshd_relay_peer_denied_total",
		"Permissions and channels refused by the peer address policy, and packets to the relay's own address outside its relayed addresses.", nil, nil)
	descBatches = prometheus.NewDesc("meshd_relay_batched_sends_total",
		"UDP GSO writes of several ChannelData packets to one client.", nil, nil)
	descBatched = prometheus.NewDesc("meshd_relay_batched_packets_total",
		"ChannelData packets sent to clients in UDP GSO writes.", nil, nil)
	descQueueDrops = prometheus.NewDesc("meshd_relay_queue_dropped_packets_total",
		"Datagrams between two allocations of this relay dropped because the receiving allocation's queue was full.", nil, nil)
)

var _ prometheus.Collector = (*Server)(nil)

// Describe implements prometheus.Collector, so that an integrator can
// register the Server in a registry shared with other components.
func (s *Server) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descAllocs, descAllocsTotal, descRefused, descUsers, descConns,
		descConnsRefused, descBytes, descPackets, descRequests, descErrors, descAuth, descDenied, descBatches, descBatched, descQueueDrops} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (s *Server) Collect(ch chan<- prometheus.Metric) {
	st := s.Stats()
	for _, t := range transports {
		ch <- prometheus.MustNewConstMetric(descAllocs, prometheus.GaugeValue, float64(st.AllocationsByTransport[t]), t)
		ch <- prometheus.MustNewConstMetric(descAllocsTotal, prometheus.CounterValue, float64(s.m.allocsTotal[t].Load()), t)
	}
	for _, t := range []string{transportTCP, transportTLS} {
		ch <- prometheus.MustNewConstMetric(descConns, prometheus.GaugeValue, float64(s.m.conns[t].Load()), t)
	}
	for _, r := range []string{"quota", "capacity", "ports", "expired", "revoked"} {
		ch <- prometheus.MustNewConstMetric(descRefused, prometheus.CounterValue, float64(st.Refused[r]), r)
	}
	for _, r := range []string{"expired", "malformed", "realm", "no_secret", "revoked"} {
		ch <- prometheus.MustNewConstMetric(descAuth, prometheus.CounterValue, float64(st.AuthRefused[r]), r)
	}
	codes := make([]int, 0, len(st.ErrorResponses))
	for c := range st.ErrorResponses {
		codes = append(codes, c)
	}
	sort.Ints(codes)
	for _, c := range codes {
		ch <- prometheus.MustNewConstMetric(descErrors, prometheus.CounterValue, float64(st.ErrorResponses[c]), strconv.Itoa(c))
	}
	ch <- prometheus.MustNewConstMetric(descUsers, prometheus.GaugeValue, float64(st.Users))
	ch <- prometheus.MustNewConstMetric(descConnsRefused, prometheus.CounterValue, float64(s.m.connsRefused.Load()))
	ch <- prometheus.MustNewConstMetric(descBytes, prometheus.CounterValue, float64(st.BytesToPeers), "to_peer")
	ch <- prometheus.MustNewConstMetric(descBytes, prometheus.CounterValue, float64(st.BytesFromPeers), "from_peer")
	ch <- prometheus.MustNewConstMetric(descPackets, prometheus.CounterValue, float64(st.PacketsToPeers), "to_peer")
	ch <- prometheus.MustNewConstMetric(descPackets, prometheus.CounterValue, float64(st.PacketsFromPeers), "from_peer")
	for i, name := range methodNames {
		ch <- prometheus.MustNewConstMetric(descRequests, prometheus.CounterValue, float64(s.m.requests[i].Load()), name)
	}
	ch <- prometheus.MustNewConstMetric(descDenied, prometheus.CounterValue, float64(s.m.peerDenied.Load()))
	ch <- prometheus.MustNewConstMetric(descBatches, prometheus.CounterValue, float64(st.BatchedSends))
	ch <- prometheus.MustNewConstMetric(descBatched, prometheus.CounterValue, float64(st.BatchedPackets))
	ch <- prometheus.MustNewConstMetric(descQueueDrops, prometheus.CounterValue, float64(st.QueueDrops))
}

// Metrics serves the relay's metrics (only these) in the Prometheus text
// format, for a /metrics route. To expose them with other components'
// metrics, register the Server (a prometheus.Collector) in a shared
// registry instead.
func (s *Server) Metrics() http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(s)
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
}
