package signal_test

import (
	"errors"
	"testing"
	"time"

	"connectrpc.com/connect"

	"meshd/internal/keys"
	"meshd/internal/metricstest"
	"meshd/internal/seal"
	"meshd/internal/signal/signaltest"
	"meshd/internal/signalclient"
	"meshd/internal/testutil"
)

// TestMetricsCountRegistrationsAndMessages drives registrations (good and
// refused) and messages (forwarded and dropped) through a real server and
// reads the counts back from /metrics over HTTP.
func TestMetricsCountRegistrationsAndMessages(t *testing.T) {
	h := signaltest.Start(t, signaltest.Options{})
	url := metricstest.Serve(t, h.Signal.Metrics())

	in := newInbox()
	a := h.Peer(t, signaltest.PeerOptions{})
	b := h.Peer(t, signaltest.PeerOptions{OnMessage: in.add})
	if err := a.Send(ctx(t), b.PublicKey(), []byte("hi")); err != nil {
		t.Fatal(err)
	}
	in.wait(t, 1)
	offline, _ := keys.Generate()
	if err := a.Send(ctx(t), offline.Public(), []byte("hi")); !errors.Is(err, signalclient.ErrNotConnected) {
		t.Fatalf("send to offline peer: %v, want ErrNotConnected", err)
	}

	// A proof made with another key, and a Hello with no key.
	r := h.Dial(t)
	ch, err := r.Hello(b.PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	server, _ := keys.FromBytes(ch.ServerPublicKey)
	nonce, sealed, err := seal.Prove(seal.PurposeSignal, ch.Challenge, server, offline)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Register(nonce[:], sealed); connect.CodeOf(err) != connect.CodeUnauthenticated {
		t.Fatalf("register with a foreign proof: %v, want unauthenticated", err)
	}
	if _, err := h.Dial(t).Hello(keys.Key{}); connect.CodeOf(err) != connect.CodeInvalidArgument {
		t.Fatalf("hello with zero key: %v, want invalid argument", err)
	}

	var m metricstest.Families
	testutil.WaitFor(t, 10*time.Second, "the forwarded message and both refusals on /metrics", func() bool {
		m = metricstest.Scrape(t, url)
		return m.Value(t, "meshd_signal_messages_forwarded_total") == 1 &&
			m.Value(t, "meshd_signal_registrations_total", "result", "unauthenticated") == 1 &&
			m.Value(t, "meshd_signal_registrations_total", "result", "invalid") == 1
	})
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"meshd_signal_registrations_total", []string{"result", "ok"}, 2},
		{"meshd_signal_registrations_total", []string{"result", "denied"}, 0},
		{"meshd_signal_connected_peers", nil, 2},
		{"meshd_signal_messages_dropped_total", []string{"reason", "not_connected"}, 1},
		{"meshd_signal_messages_dropped_total", []string{"reason", "queue_full"}, 0},
		{"meshd_signal_streams_replaced_total", nil, 0},
	} {
		if got := m.Value(t, c.name, c.labels...); got != c.want {
			t.Errorf("%s %v = %g, want %g", c.name, c.labels, got, c.want)
		}
	}
	if got := m.LabelValues("meshd_signal_messages_dropped_total", "reason"); len(got) != 5 {
		t.Errorf("dropped reasons %q: want the five fixed ones, no more", got)
	}

	// A peer that leaves is no longer connected.
	b.Stop()
	testutil.WaitFor(t, 10*time.Second, "connected peers to drop to 1", func() bool {
		return metricstest.Scrape(t, url).Value(t, "meshd_signal_connected_peers") == 1
	})
}
