package agent

import (
	"bytes"
	"context"
	"crypto/rand"
	"io"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	daemonv1 "meshd/api/daemon/v1"
	"meshd/internal/metricstest"
	"meshd/internal/testutil"
)

// fakeStatus hands Metrics the status a test sets.
type fakeStatus struct {
	mu sync.Mutex
	st *daemonv1.StatusResponse
}

func (f *fakeStatus) set(state string, peers ...*daemonv1.PeerStatus) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.st = &daemonv1.StatusResponse{State: state, Peers: peers, Self: &daemonv1.SelfStatus{
		Control: &daemonv1.ServerStatus{State: StateConnected},
		Signal:  &daemonv1.ServerStatus{State: StateDisconnected},
	}}
}

func (f *fakeStatus) get() *daemonv1.StatusResponse {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.st
}

func bravo(path string, tx, rx int64, handshake time.Time) *daemonv1.PeerStatus {
	p := &daemonv1.PeerStatus{Name: "bravo", PublicKey: "key-b", State: PeerConnected, Path: path, TxBytes: tx, RxBytes: rx}
	if !handshake.IsZero() {
		p.LastHandshake = timestamppb.New(handshake)
	}
	return p
}

// TestMetricsAddBytesToThePathTheyTook feeds statuses in which a peer moves
// from a direct to a relayed path, its device restarts and the tunnel goes
// down and up, and checks each scrape: bytes go to the path they took and
// never decrease.
func TestMetricsAddBytesToThePathTheyTook(t *testing.T) {
	var fs fakeStatus
	url := metricstest.Serve(t, newMetrics(fs.get, MetricsOptions{}).Handler())
	bytesOn := func(m metricstest.Families, dir, path string) float64 {
		return m.Value(t, "meshd_agent_bytes_total", "direction", dir, "path", path)
	}

	fs.set("up", bravo(PathDirect, 1000, 500, time.Now().Add(-30*time.Second)))
	m := metricstest.Scrape(t, url)
	if s, r := bytesOn(m, "sent", PathDirect), bytesOn(m, "received", PathDirect); s != 1000 || r != 500 {
		t.Fatalf("direct: sent %g, received %g; want 1000, 500", s, r)
	}
	if got := m.Value(t, "meshd_agent_peers", "path", PathDirect); got != 1 {
		t.Fatalf("peers{direct} = %g, want 1", got)
	}
	if got := m.Value(t, "meshd_agent_peers", "path", PathRelayed); got != 0 {
		t.Fatalf("peers{relayed} = %g, want 0", got)
	}
	if n, sum := m.Histogram(t, "meshd_agent_handshake_age_seconds"); n != 1 || sum < 30 || sum > 60 {
		t.Fatalf("handshake age: %d peers, sum %gs; want 1 peer about 30s ago", n, sum)
	}
	if c, s := m.Value(t, "meshd_agent_control_connected"), m.Value(t, "meshd_agent_signal_connected"); c != 1 || s != 0 {
		t.Fatalf("control_connected %g, signal_connected %g; want 1, 0", c, s)
	}
	for name := range m {
		if vs := m.LabelValues(name, "peer"); len(vs) > 0 {
			t.Fatalf("%s has peer labels %q without PeerLabels", name, vs)
		}
	}

	// The peer moves to the relay: what moves from now on is relayed.
	fs.set("up", bravo(PathRelayed, 1600, 800, time.Time{}))
	m = metricstest.Scrape(t, url)
	for _, c := range []struct {
		dir, path string
		want      float64
	}{{"sent", PathDirect, 1000}, {"received", PathDirect, 500}, {"sent", PathRelayed, 600}, {"received", PathRelayed, 300}} {
		if got := bytesOn(m, c.dir, c.path); got != c.want {
			t.Errorf("after the move: %s on %s = %g, want %g", c.dir, c.path, got, c.want)
		}
	}

	// A new device counts from zero; the tunnel goes down (no peers
	// listed) and comes back: the totals only grow.
	fs.set("up", bravo(PathRelayed, 100, 40, time.Time{}))
	metricstest.Scrape(t, url)
	fs.set("down")
	m = metricstest.Scrape(t, url)
	if up, peers := m.Value(t, "meshd_agent_tunnel_up"), m.Value(t, "meshd_agent_peers", "path", PathRelayed); up != 0 || peers != 0 {
		t.Fatalf("down: tunnel_up %g, peers{relayed} %g; want 0, 0", up, peers)
	}
	fs.set("up", bravo(PathRelayed, 300, 40, time.Time{}))
	m = metricstest.Scrape(t, url)
	if s, r := bytesOn(m, "sent", PathRelayed), bytesOn(m, "received", PathRelayed); s != 600+100+200 || r != 300+40 {
		t.Fatalf("relayed after restart and down/up: sent %g, received %g; want 900, 340", s, r)
	}
	if got := m.Value(t, "meshd_agent_tunnel_up"); got != 1 {
		t.Fatalf("tunnel_up = %g, want 1", got)
	}
}

// TestMetricsPeerLabelsOnlyWhenAsked: with PeerLabels, each peer has its
// own series, named by its name.
func TestMetricsPeerLabelsOnlyWhenAsked(t *testing.T) {
	var fs fakeStatus
	fs.set("up", bravo(PathRelayed, 1234, 99, time.Now().Add(-10*time.Second)))
	m := metricstest.Scrape(t, metricstest.Serve(t, newMetrics(fs.get, MetricsOptions{PeerLabels: true}).Handler()))
	if got := m.Value(t, "meshd_agent_peer_path", "peer", "bravo", "path", PathRelayed); got != 1 {
		t.Fatalf("peer_path{bravo,relayed} = %g, want 1", got)
	}
	if got := m.Value(t, "meshd_agent_peer_bytes_total", "peer", "bravo", "direction", "sent"); got != 1234 {
		t.Fatalf("peer_bytes_total{bravo,sent} = %g, want 1234", got)
	}
	if got := m.Value(t, "meshd_agent_peer_handshake_age_seconds", "peer", "bravo"); got < 10 || got > 40 {
		t.Fatalf("peer_handshake_age_seconds{bravo} = %g, want about 10", got)
	}
}

// TestMetricsOfARealMesh scrapes a real netstack agent after it moved 1 MiB
// to another over their direct path.
func TestMetricsOfARealMesh(t *testing.T) {
	w := newWorld(t)
	a, b := w.agent("meta"), w.agent("metb")
	da, _ := waitUp(t, a)
	db, ipb := waitUp(t, b)
	url := metricstest.Serve(t, NewMetrics(a, MetricsOptions{}).Handler())

	ln, err := db.Net().ListenTCP(&net.TCPAddr{Port: 7000})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		io.Copy(conn, conn)
	}()
	waitPing(t, da, ipb, 15*time.Second)
	testutil.WaitFor(t, 10*time.Second, "a on a direct path to b", func() bool {
		st := a.Status()
		return len(st.Peers) == 1 && st.Peers[0].Path == PathDirect
	})
	before := metricstest.Scrape(t, url).Value(t, "meshd_agent_bytes_total", "direction", "sent", "path", PathDirect)

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	conn, err := da.Net().DialContextTCPAddrPort(ctx, netip.AddrPortFrom(ipb, 7000))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	const n = 1 << 20
	want := make([]byte, n)
	rand.Read(want)
	go func() { conn.Write(want) }()
	got := make([]byte, n)
	conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.ReadFull(conn, got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("echoed data differs")
	}

	var m metricstest.Families
	testutil.WaitFor(t, 5*time.Second, "1 MiB more sent and received on the direct path", func() bool {
		m = metricstest.Scrape(t, url)
		return m.Value(t, "meshd_agent_bytes_total", "direction", "sent", "path", PathDirect)-before >= n &&
			m.Value(t, "meshd_agent_bytes_total", "direction", "received", "path", PathDirect) >= n
	})
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"meshd_agent_tunnel_up", nil, 1},
		{"meshd_agent_control_connected", nil, 1},
		{"meshd_agent_signal_connected", nil, 1},
		{"meshd_agent_peers", []string{"path", PathDirect}, 1},
		{"meshd_agent_peers", []string{"path", PathRelayed}, 0},
		{"meshd_agent_peer_states", []string{"state", PeerConnected}, 1},
		{"meshd_agent_bytes_total", []string{"direction", "sent", "path", PathRelayed}, 0},
	} {
		if got := m.Value(t, c.name, c.labels...); got != c.want {
			t.Errorf("%s %v = %g, want %g", c.name, c.labels, got, c.want)
		}
	}
	if n, _ := m.Histogram(t, "meshd_agent_handshake_age_seconds"); n != 1 {
		t.Errorf("handshake age over %d peers, want 1", n)
	}
}
