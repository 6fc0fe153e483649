package control

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strings"
	"time"

	"connectrpc.com/connect"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/protobuf/proto"

	controlv1 "meshd/api/control/v1"
	"meshd/api/control/v1/controlv1connect"
)

// metrics are control's Prometheus metrics that must be counted as things
// happen (logins, maps sent, how long maps take); what can be read off the
// accounts (peers, online, streams) is read when scraped. They live in the
// Service, never in a global registry, so that several services (tests,
// replicas in one process) do not share counts.
type metrics struct {
	logins     *prometheus.CounterVec
	maps       *prometheus.CounterVec
	fullMaps   prometheus.Counter
	updates    prometheus.Counter
	mapBytes   *prometheus.HistogramVec
	fullBytes  prometheus.Observer
	updBytes   prometheus.Observer
	mapCompute prometheus.Histogram
	rounds     prometheus.Histogram
}

// Kinds of map messages.
const (
	mapKindFull   = "full"
	mapKindUpdate = "update"
)

// loginOK is the login result of a successful login; refusals are the
// lower-case names of controlv1.Reason without the prefix
// (setup_key_expired, login_expired, proof_failed, ...), other failures
// "error".
const loginOK = "ok"

func newMetrics() *metrics {
	m := &metrics{
		logins: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "meshd_control_logins_total",
			Help: "Logins of agents, by result: ok, or the refusal reason (setup_key_unknown, setup_key_expired, login_expired, proof_failed, peer_unknown, ...), or error."},
			[]string{"result"}),
		maps: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "meshd_control_maps_sent_total",
			Help: "Network maps sent on Sync streams, by kind: full (the whole map) or update (changed entries only)."},
			[]string{"kind"}),
		mapBytes: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "meshd_control_map_bytes",
			Help:    "Size of the maps sent, in bytes of protobuf before compression, by kind.",
			Buckets: prometheus.ExponentialBuckets(256, 4, 10)}, // 256 B to 64 MiB
			[]string{"kind"}),
		mapCompute: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "meshd_control_map_compute_seconds",
			Help:    "Time to compute one peer's whole map from the account's index (rebuilding the index first when the peer is new to it).",
			Buckets: prometheus.ExponentialBuckets(10e-6, 4, 10)}), // 10 µs to 2.6 s
		rounds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "meshd_control_change_round_seconds",
			Help:    "Time of one round of changes: rebuilding an account's index and telling the affected streams.",
			Buckets: prometheus.ExponentialBuckets(10e-6, 4, 10)}),
	}
	m.fullMaps, m.updates = m.maps.WithLabelValues(mapKindFull), m.maps.WithLabelValues(mapKindUpdate)
	m.fullBytes, m.updBytes = m.mapBytes.WithLabelValues(mapKindFull), m.mapBytes.WithLabelValues(mapKindUpdate)
	for _, r := range loginResults() {
		m.logins.WithLabelValues(r) // every result shows, as 0, before it happens
	}
	return m
}

// loginResults are the values of the login counter's label.
func loginResults() []string {
	out := []string{loginOK, "error"}
	for v := range controlv1.Reason_name {
		if r := controlv1.Reason(v); r != controlv1.Reason_REASON_UNSPECIFIED {
			out = append(out, reasonLabel(r))
		}
	}
	slices.Sort(out)
	return out
}

func reasonLabel(r controlv1.Reason) string {
	return strings.ToLower(strings.TrimPrefix(r.String(), "REASON_"))
}

// loginResult is the label of a Login call's outcome.
func loginResult(err error) string {
	if err == nil {
		return loginOK
	}
	var ce *connect.Error
	if errors.As(err, &ce) {
		for _, d := range ce.Details() {
			if v, e := d.Value(); e == nil {
				if ed, ok := v.(*controlv1.ErrorDetail); ok && ed.Reason != controlv1.Reason_REASON_UNSPECIFIED {
					return reasonLabel(ed.Reason)
				}
			}
		}
	}
	return "error"
}

// interceptor counts Login results at the handler edge, so that every way
// a login ends (refused by the proof, the key, the account, or a limit in
// front of the handler) is counted once.
func (m *metrics) interceptor() connect.Option {
	return connect.WithInterceptors(connect.UnaryInterceptorFunc(func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			resp, err := next(ctx, req)
			if req.Spec().Procedure == controlv1connect.ControlServiceLoginProcedure {
				m.logins.WithLabelValues(loginResult(err)).Inc()
			}
			return resp, err
		}
	}))
}

// sent counts a map message after Send marshalled it. The size comes from
// the size cache that marshalling filled, so it costs no second pass over
// a large map.
func (m *metrics) sent(kind string, msg proto.Message) {
	n := float64(proto.MarshalOptions{UseCachedSize: true}.Size(msg))
	if kind == mapKindFull {
		m.fullMaps.Inc()
		m.fullBytes.Observe(n)
		return
	}
	m.updates.Inc()
	m.updBytes.Observe(n)
}

func (m *metrics) mapComputed(d time.Duration) { m.mapCompute.Observe(d.Seconds()) }

func (m *metrics) round(d time.Duration) { m.rounds.Observe(d.Seconds()) }

// Metric descriptions of what is read off the accounts when scraped.
var (
	descPeers = prometheus.NewDesc("meshd_control_peers",
		"Registered peers, all accounts.", nil, nil)
	descOnline = prometheus.NewDesc("meshd_control_peers_online",
		"Peers with at least one open Sync stream.", nil, nil)
	descStreams = prometheus.NewDesc("meshd_control_sync_streams",
		"Open Sync streams (a peer may briefly hold two while it reconnects).", nil, nil)
)

var _ prometheus.Collector = (*Service)(nil)

// Describe implements prometheus.Collector, so that an integrator can
// register the Service in a registry shared with other components.
func (s *Service) Describe(ch chan<- *prometheus.Desc) {
	ch <- descPeers
	ch <- descOnline
	ch <- descStreams
	s.m.collectors(func(c prometheus.Collector) { c.Describe(ch) })
}

// Collect implements prometheus.Collector.
func (s *Service) Collect(ch chan<- prometheus.Metric) {
	var peers, online, streams int
	for _, a := range s.accountList() {
		a.mu.Lock()
		peers += len(a.peers)
		online += len(a.online)
		a.mu.Unlock()
		a.dist.connMu.Lock()
		for _, cs := range a.dist.conns {
			streams += len(cs)
		}
		a.dist.connMu.Unlock()
	}
	ch <- prometheus.MustNewConstMetric(descPeers, prometheus.GaugeValue, float64(peers))
	ch <- prometheus.MustNewConstMetric(descOnline, prometheus.GaugeValue, float64(online))
	ch <- prometheus.MustNewConstMetric(descStreams, prometheus.GaugeValue, float64(streams))
	s.m.collectors(func(c prometheus.Collector) { c.Collect(ch) })
}

func (m *metrics) collectors(f func(prometheus.Collector)) {
	for _, c := range []prometheus.Collector{m.logins, m.maps, m.mapBytes, m.mapCompute, m.rounds} {
		f(c)
	}
}

// Metrics serves control's metrics (only these) in the Prometheus text
// format, for a /metrics route. To expose them with other components'
// metrics, register the Service (a prometheus.Collector) in a shared
// registry instead.
func (s *Service) Metrics() http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(s)
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
}
