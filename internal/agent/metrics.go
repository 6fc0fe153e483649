package agent

import (
	"context"
	"maps"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	daemonv1 "meshd/api/daemon/v1"
)

// PathNone is the path label of peers with no path (yet).
const PathNone = "none"

// pathKinds are the path labels that always show, 0 or not.
var pathKinds = []string{PathDirect, PathRelayed, PathNone}

// DefaultMetricsSample is how often Metrics.Run looks at the peers' byte
// counters between scrapes.
const DefaultMetricsSample = 10 * time.Second

// MetricsOptions configure Metrics.
type MetricsOptions struct {
	// PeerLabels adds series per peer, labelled with the peer's name. Off
	// by default: a series per peer grows with the mesh, and a peer's name
	// says who talks to whom.
	PeerLabels bool
}

// Metrics is the agent's Prometheus collector. Everything is read from the
// engine's status when scraped, except bytes per path kind: WireGuard
// counts bytes per peer, not per path, so Metrics samples the counters
// (Run, and every scrape) and adds what moved since the last sample to the
// path the peer is on then. A path change is thus seen with the sample's
// granularity; the totals are exact.
type Metrics struct {
	status func() *daemonv1.StatusResponse
	opts   MetricsOptions

	mu     sync.Mutex
	last   map[string]peerSample // by public key
	byPath map[string]*[2]uint64 // path kind → bytes sent, received
}

type peerSample struct{ tx, rx uint64 }

// NewMetrics returns the collector of e.
func NewMetrics(e *Engine, o MetricsOptions) *Metrics { return newMetrics(e.Status, o) }

func newMetrics(status func() *daemonv1.StatusResponse, o MetricsOptions) *Metrics {
	m := &Metrics{status: status, opts: o, last: map[string]peerSample{}, byPath: map[string]*[2]uint64{}}
	for _, p := range pathKinds {
		m.byPath[p] = new([2]uint64)
	}
	return m
}

// Run samples the byte counters every interval (0: DefaultMetricsSample)
// until ctx ends.
func (m *Metrics) Run(ctx context.Context, interval time.Duration) {
	if interval <= 0 {
		interval = DefaultMetricsSample
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			m.sample()
		}
	}
}

// sample takes a status and adds each peer's bytes since the last sample
// to its current path kind.
func (m *Metrics) sample() *daemonv1.StatusResponse {
	st := m.status()
	m.mu.Lock()
	defer m.mu.Unlock()
	seen := make(map[string]peerSample, len(st.GetPeers()))
	for _, p := range st.GetPeers() {
		cur := peerSample{tx: uint64(max(0, p.GetTxBytes())), rx: uint64(max(0, p.GetRxBytes()))}
		prev := m.last[p.GetPublicKey()]
		if cur.tx < prev.tx || cur.rx < prev.rx { // a new device counts from 0
			prev = peerSample{}
		}
		acc := m.byPath[pathLabel(p)]
		if acc == nil { // a path kind this version does not list
			acc = new([2]uint64)
			m.byPath[pathLabel(p)] = acc
		}
		acc[0] += cur.tx - prev.tx
		acc[1] += cur.rx - prev.rx
		seen[p.GetPublicKey()] = cur
	}
	if st.GetState() == "up" {
		m.last = seen // forget peers that left the map
	} else {
		maps.Copy(m.last, seen) // peers are not listed while down: keep what they had
	}
	return st
}

func pathLabel(p *daemonv1.PeerStatus) string {
	if p.GetPath() == "" {
		return PathNone
	}
	return p.GetPath()
}

// Metric descriptions.
var (
	descTunnelUp = prometheus.NewDesc("meshd_agent_tunnel_up",
		"1 while the tunnel is up (it may be up with control unreachable), else 0.", nil, nil)
	descControl = prometheus.NewDesc("meshd_agent_control_connected",
		"1 while the Sync stream to control is connected, else 0.", nil, nil)
	descSignal = prometheus.NewDesc("meshd_agent_signal_connected",
		"1 while the stream to signal is registered, else 0.", nil, nil)
	descPeers = prometheus.NewDesc("meshd_agent_peers",
		"Peers in the map, by path kind (direct, relayed, none).", []string{"path"}, nil)
	descPeerStates = prometheus.NewDesc("meshd_agent_peer_states",
		"Peers in the map, by state (connected, connecting, idle).", []string{"state"}, nil)
	descBytes = prometheus.NewDesc("meshd_agent_bytes_total",
		"WireGuard bytes to and from peers, by direction (sent, received) and the path kind they took; sum over path for the total.",
		[]string{"direction", "path"}, nil)
	descHandshake = prometheus.NewDesc("meshd_agent_handshake_age_seconds",
		"Time since each peer's last WireGuard handshake, over the peers that have had one (a handshake older than about three minutes means the peer is quiet or unreachable).",
		nil, nil)
	descPeerPath = prometheus.NewDesc("meshd_agent_peer_path",
		"1 for each peer's current path kind (only with per-peer labels).", []string{"peer", "path"}, nil)
	descPeerBytes = prometheus.NewDesc("meshd_agent_peer_bytes_total",
		"WireGuard bytes to and from each peer since its device started (only with per-peer labels).", []string{"peer", "direction"}, nil)
	descPeerHandshake = prometheus.NewDesc("meshd_agent_peer_handshake_age_seconds",
		"Time since each peer's last WireGuard handshake (only with per-peer labels; absent before the first).", []string{"peer"}, nil)
)

// handshakeBuckets bound the handshake-age histogram: WireGuard rekeys
// every two minutes while traffic flows, and a peer is stale after three.
var handshakeBuckets = []float64{5, 15, 30, 60, 120, 180, 300, 600, 1800, 3600}

var _ prometheus.Collector = (*Metrics)(nil)

// Describe implements prometheus.Collector.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descTunnelUp, descControl, descSignal, descPeers, descPeerStates, descBytes, descHandshake} {
		ch <- d
	}
	if m.opts.PeerLabels {
		ch <- descPeerPath
		ch <- descPeerBytes
		ch <- descPeerHandshake
	}
}

// Collect implements prometheus.Collector.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	st := m.sample()
	now := time.Now()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	gauge(descTunnelUp, boolFloat(st.GetState() == "up"))
	gauge(descControl, boolFloat(st.GetSelf().GetControl().GetState() == StateConnected))
	gauge(descSignal, boolFloat(st.GetSelf().GetSignal().GetState() == StateConnected))

	paths := map[string]int{}
	states := map[string]int{PeerConnected: 0, PeerConnecting: 0, PeerIdle: 0}
	for _, p := range pathKinds {
		paths[p] = 0
	}
	counts := make(map[float64]uint64, len(handshakeBuckets))
	var hsCount uint64
	var hsSum float64
	for _, p := range st.GetPeers() {
		paths[pathLabel(p)]++
		states[p.GetState()]++
		if p.GetLastHandshake() != nil {
			age := max(0, now.Sub(p.GetLastHandshake().AsTime()).Seconds())
			hsCount++
			hsSum += age
			for _, b := range handshakeBuckets {
				if age <= b {
					counts[b]++
				}
			}
		}
	}
	for p, n := range paths {
		gauge(descPeers, float64(n), p)
	}
	for s, n := range states {
		gauge(descPeerStates, float64(n), s)
	}
	ch <- prometheus.MustNewConstHistogram(descHandshake, hsCount, hsSum, counts)

	m.mu.Lock()
	for p, b := range m.byPath {
		ch <- prometheus.MustNewConstMetric(descBytes, prometheus.CounterValue, float64(b[0]), "sent", p)
		ch <- prometheus.MustNewConstMetric(descBytes, prometheus.CounterValue, float64(b[1]), "received", p)
	}
	m.mu.Unlock()

	if !m.opts.PeerLabels {
		return
	}
	for _, p := range st.GetPeers() {
		name := peerLabel(p)
		gauge(descPeerPath, 1, name, pathLabel(p))
		ch <- prometheus.MustNewConstMetric(descPeerBytes, prometheus.CounterValue, float64(max(0, p.GetTxBytes())), name, "sent")
		ch <- prometheus.MustNewConstMetric(descPeerBytes, prometheus.CounterValue, float64(max(0, p.GetRxBytes())), name, "received")
		if p.GetLastHandshake() != nil {
			gauge(descPeerHandshake, max(0, now.Sub(p.GetLastHandshake().AsTime()).Seconds()), name)
		}
	}
}

// peerLabel names a peer for per-peer series: its name, unique in the
// account, else its overlay address, else its key.
func peerLabel(p *daemonv1.PeerStatus) string {
	switch {
	case p.GetName() != "":
		return p.GetName()
	case p.GetOverlayIp() != "":
		return p.GetOverlayIp()
	}
	return p.GetPublicKey()
}

func boolFloat(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// Handler serves the agent's metrics (only these) in the Prometheus text
// format, for a /metrics route.
func (m *Metrics) Handler() http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(m)
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
}
