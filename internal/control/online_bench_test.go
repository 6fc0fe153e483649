package control_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	adminv1 "meshd/api/admin/v1"
	"meshd/internal/control"
	"meshd/internal/control/controltest"
)

// countingTransport counts the bytes of Sync response bodies: the Connect
// envelopes on the wire (compressed where control compresses), without
// HTTP/2 and TLS framing.
type countingTransport struct {
	base  http.RoundTripper
	bytes *atomic.Int64
}

func (t countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := t.base.RoundTrip(r)
	if err == nil && strings.HasSuffix(r.URL.Path, "/Sync") {
		resp.Body = countingBody{resp.Body, t.bytes}
	}
	return resp, err
}

type countingBody struct {
	io.ReadCloser
	n *atomic.Int64
}

func (b countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n.Add(int64(n))
	return n, err
}

// BenchmarkPeerOnlineFanout: one peer goes offline or online (alternately,
// one transition per op) under the default All → All policy until every one
// of 1,000 other connected streams shows it; ns/op is that latency,
// coalescing delay included. wire-B/op counts what those streams received.
// mode=full: agents that take whole maps only (as before map updates);
// mode=update: agents that take updates. MESHD_BENCH_PEERS changes the 1,000.
func BenchmarkPeerOnlineFanout(b *testing.B) {
	n := 1000
	if v, err := strconv.Atoi(os.Getenv("MESHD_BENCH_PEERS")); err == nil && v > 0 {
		n = v
	}
	for _, mode := range []string{"full", "update"} {
		b.Run("mode="+mode, func(b *testing.B) {
			h := controltest.NewHarness(b, 0, controltest.Quiet(), controltest.Patience(5*time.Minute),
				controltest.WithOptions(func(o *control.Options) {
					o.Coalesce = control.DefaultCoalesce
					// The harness's agents give up on a stream silent for
					// 5 s; whole-map rounds of 1,000 streams take seconds.
					o.Heartbeat = time.Second
				}))
			var wire atomic.Int64
			hc := &http.Client{Transport: countingTransport{base: h.HTTPClient().Transport, bytes: &wire}}
			probe := h.AddAgent(controltest.AgentOptions{Hostname: "probe", NoSync: true})
			as := make([]*controltest.Agent, n)
			for i := range as {
				as[i] = h.AddAgent(controltest.AgentOptions{Hostname: fmt.Sprintf("peer-%d", i), NoSync: true,
					HTTPClient: hc, FullMapsOnly: mode == "full"})
			}
			// Streams connect while no policy connects anyone (each
			// connection is an online event: with whole maps of 1,000
			// peers, 1,000 connections take minutes), then All → All
			// comes back in one change.
			ctx := context.Background()
			must[adminv1.DeletePolicyResponse](b)(h.Admin.DeletePolicy(ctx, connect.NewRequest(&adminv1.DeletePolicyRequest{Id: "Default"})))
			probe.StartSync()
			for _, a := range as {
				a.StartSync()
			}
			for _, a := range as {
				a.WaitFor(b, "connected", func(*controltest.Map) bool { return true })
			}
			start := time.Now()
			must[adminv1.Policy](b)(h.Admin.CreatePolicy(ctx, connect.NewRequest(&adminv1.CreatePolicyRequest{Name: "all",
				Sources: []string{"All"}, Destinations: []string{"All"}, Bidirectional: true})))
			for _, a := range as {
				a.WaitFor(b, "settled", func(m *controltest.Map) bool {
					if len(m.Peers) != n {
						return false
					}
					for _, p := range m.Peers {
						if !p.Online {
							return false
						}
					}
					return true
				})
			}
			b.Logf("%d streams settled in %s; one whole map is %d bytes before compression", n,
				time.Since(start).Round(time.Millisecond), proto.Size(as[0].Latest()))
			online := true
			wire.Store(0)
			cpu := cpuTime()
			for b.Loop() {
				if online {
					probe.Stop()
				} else {
					probe.StartSync()
				}
				online = !online
				for _, a := range as {
					a.WaitFor(b, "probe", peerOnline("probe", online))
				}
			}
			for _, a := range as {
				if st := a.Client.Stats(); st.Resyncs != 0 {
					b.Fatalf("%s resynced: %+v", a.Name, st)
				}
			}
			b.ReportMetric(float64(wire.Load())/float64(b.N), "wire-B/op")
			b.ReportMetric(float64((cpuTime()-cpu).Milliseconds())/float64(b.N), "cpu-ms/op")
		})
	}
}
