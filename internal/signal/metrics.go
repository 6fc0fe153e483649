package signal

import (
	"net/http"
	"sync/atomic"

	"connectrpc.com/connect"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics are the counters Stats does not keep. Like Stats, they are
// atomics on the serving paths, turned into Prometheus metrics only when
// scraped.
type metrics struct {
	connected atomic.Int64                       // registered streams
	refusals  [len(refusalReasons)]atomic.Uint64 // by refusalReasons
}

// refusalReasons are the label values of refused registrations, from the
// Connect code the stream ended with: a fixed, small set whatever the
// checks in front of registration become.
var refusalReasons = [...]string{"invalid", "unauthenticated", "denied", "rate_limited", "timeout", "aborted", "other"}

func refusalReason(err error) int {
	switch connect.CodeOf(err) {
	case connect.CodeInvalidArgument:
		return 0
	case connect.CodeUnauthenticated:
		return 1
	case connect.CodePermissionDenied:
		return 2
	case connect.CodeResourceExhausted:
		return 3
	case connect.CodeDeadlineExceeded:
		return 4
	case connect.CodeCanceled, connect.CodeUnavailable, connect.CodeAborted:
		return 5
	}
	return 6
}

// refused counts a failed registration by its reason.
func (m *metrics) refused(err error) { m.refusals[refusalReason(err)].Add(1) }

// Metric descriptions.
var (
	descStreams = prometheus.NewDesc("meshd_signal_streams",
		"Open signal streams, registered or not.", nil, nil)
	descConnected = prometheus.NewDesc("meshd_signal_connected_peers",
		"Peers with a registered stream.", nil, nil)
	descRegistrations = prometheus.NewDesc("meshd_signal_registrations_total",
		"Registrations, by result: ok, or why one was refused (invalid, unauthenticated, denied, rate_limited, timeout, aborted, other).",
		[]string{"result"}, nil)
	descReplaced = prometheus.NewDesc("meshd_signal_streams_replaced_total",
		"Streams ended because a newer stream registered the same key.", nil, nil)
	descForwarded = prometheus.NewDesc("meshd_signal_messages_forwarded_total",
		"Envelopes written to their recipients' streams.", nil, nil)
	descDropped = prometheus.NewDesc("meshd_signal_messages_dropped_total",
		"Envelopes not forwarded, by reason (not_connected, queue_full, rate_limited, too_large, invalid); the sender is told which.",
		[]string{"reason"}, nil)
	descBatched = prometheus.NewDesc("meshd_signal_messages_batched_total",
		"Envelopes that arrived in a batch of several.", nil, nil)
	descRemote = prometheus.NewDesc("meshd_signal_instance_messages_total",
		"Envelopes exchanged with other signal instances, by what happened: sent (handed to the recipient's instance), received, dropped (received for a peer that had left or had a full queue), lost (could not be published: the cluster's store was unavailable).",
		[]string{"result"}, nil)
)

var _ prometheus.Collector = (*Server)(nil)

// Describe implements prometheus.Collector, so that an integrator can
// register the Server in a registry shared with other components.
func (s *Server) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descStreams, descConnected, descRegistrations, descReplaced,
		descForwarded, descDropped, descBatched, descRemote} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (s *Server) Collect(ch chan<- prometheus.Metric) {
	st := s.Stats()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge(descStreams, float64(st.Streams))
	gauge(descConnected, float64(s.m.connected.Load()))
	counter(descRegistrations, st.Registered, "ok")
	for i, r := range refusalReasons {
		counter(descRegistrations, s.m.refusals[i].Load(), r)
	}
	counter(descReplaced, st.Replaced)
	counter(descForwarded, st.Sent)
	counter(descDropped, st.NotConnected, "not_connected")
	counter(descDropped, st.QueueFull, "queue_full")
	counter(descDropped, st.RateLimited, "rate_limited")
	counter(descDropped, st.TooLarge, "too_large")
	counter(descDropped, st.Invalid, "invalid")
	counter(descBatched, st.Batched)
	counter(descRemote, st.RemoteSent, "sent")
	counter(descRemote, st.RemoteReceived, "received")
	counter(descRemote, st.RemoteDropped, "dropped")
	counter(descRemote, st.RemoteLost, "lost")
}

// Metrics serves signal's metrics (only these) in the Prometheus text
// format, for a /metrics route. To expose them with other components'
// metrics, register the Server (a prometheus.Collector) in a shared
// registry instead.
func (s *Server) Metrics() http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(s)
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
}
