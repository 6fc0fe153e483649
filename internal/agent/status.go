package agent

import (
	"errors"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	daemonv1 "meshd/api/daemon/v1"
	"meshd/internal/agent/path"
	"meshd/internal/keys"
	"meshd/wg"
)

// Peer states and paths, as `meshd status --json` prints them.
const (
	PeerConnected  = "connected"
	PeerConnecting = "connecting"
	PeerIdle       = "idle"
	PathDirect     = "direct"
	PathRelayed    = "relayed"
)

// Status returns what `meshd status` shows. It works in every state, also
// while control is unreachable (then it says so).
func (e *Engine) Status() *daemonv1.StatusResponse {
	e.mu.Lock()
	st, t, lastErr := e.st, e.tun, e.lastErr
	e.mu.Unlock()
	resp := &daemonv1.StatusResponse{
		Self: &daemonv1.SelfStatus{
			Name:      st.Name,
			DnsName:   st.DNSName,
			OverlayIp: st.OverlayIP,
			PublicKey: e.priv.Public().String(),
			Control:   &daemonv1.ServerStatus{Url: st.ControlURL, State: StateDisconnected},
			Signal:    &daemonv1.ServerStatus{State: StateDisconnected},
			Interface: e.opts.Device.Name,
			Login:     e.ssoLoginStatus(),
		},
		Peers: []*daemonv1.PeerStatus{},
	}
	switch {
	case lastErr != nil:
		resp.State, resp.Message = "needs-login", lastErr.Error()
		var f *fatalError
		if errors.As(lastErr, &f) {
			resp.State = "stopped"
		}
		return resp
	case t == nil:
		resp.State, resp.Message = "down", "the tunnel is down; run `meshd up`"
		return resp
	}
	t.mu.RLock()
	resp.State, resp.Message = t.phase, t.message
	if t.phase == "up" {
		resp.State = "up"
	}
	if t.ctl != nil {
		resp.Self.Control = serverStatus(t.ctl.Status())
	} else if t.phase == "connecting" {
		resp.Self.Control.State = StateConnecting
	}
	if t.sig != nil {
		resp.Self.Signal = serverStatus(t.sig.Status())
	} else {
		resp.Self.Signal.Url = t.sigURL
	}
	if t.self != nil {
		resp.Self.Name, resp.Self.DnsName, resp.Self.OverlayIp = t.self.GetName(), t.self.GetDnsName(), t.self.GetOverlayIp()
	}
	if t.dev != nil {
		resp.Self.Interface = t.dev.Name()
		resp.Self.ListenPort = uint32(t.dev.ListenPort())
	}
	workers := make([]*peerWorker, 0, len(t.peers))
	for _, w := range t.peers {
		workers = append(workers, w)
	}
	stats := make(map[keys.Key]wg.PeerStats, len(t.stats))
	for k, s := range t.stats {
		stats[k] = s
	}
	dev := t.dev
	resp.Routes, resp.Dns = t.svc.status()
	resp.StunServers = slices.Clone(t.stun)
	t.mu.RUnlock()
	if dev != nil {
		resp.Routes = annotateRoutes(resp.Routes, routeInfo(dev))
		// Fresh figures: the cached ones are up to a second old.
		if st, err := dev.Stats(); err == nil {
			for _, s := range st {
				stats[s.PublicKey] = s
			}
		}
	}
	if resp.State == "up" && resp.Self.Control.State != StateConnected {
		resp.Message = "control is unreachable; existing tunnels keep working"
		if e := resp.Self.Control.Error; e != "" {
			resp.Message += " (" + e + ")"
		}
	}
	now := time.Now()
	for _, w := range workers {
		snap := w.snapshot()
		s := stats[w.key]
		ps := &daemonv1.PeerStatus{
			Name:      snap.meta.GetName(),
			DnsName:   snap.meta.GetDnsName(),
			OverlayIp: snap.meta.GetOverlayIp(),
			PublicKey: w.key.String(),
			RxBytes:   s.RxBytes,
			TxBytes:   s.TxBytes,
		}
		if !s.LastHandshake.IsZero() {
			ps.LastHandshake = timestamppb.New(s.LastHandshake)
		}
		ps.State, ps.Path = peerState(snap, s, now)
		if why := w.unreachable.Load(); why != nil && ps.State != PeerConnected {
			ps.Reason = *why
		} else if snap.pq.reason != "" {
			ps.Reason = snap.pq.reason
		} else if ps.Path != PathDirect && snap.meta.GetOnline() {
			ps.Reason = snap.reason
		}
		ps.PostQuantum = snap.pq.on
		if !snap.pq.rotated.IsZero() {
			ps.PostQuantumRotated = timestamppb.New(snap.pq.rotated)
		}
		if snap.path != path.None {
			ps.LocalCandidate = &daemonv1.Candidate{Type: snap.pair.Local.Type, Address: snap.pair.Local.Address}
			ps.RemoteCandidate = &daemonv1.Candidate{Type: snap.pair.Remote.Type, Address: snap.pair.Remote.Address}
			ps.LatencyMs = float64(snap.rtt.Microseconds()) / 1000
		}
		resp.Peers = append(resp.Peers, ps)
	}
	markUnreachableRoutes(resp.Routes, resp.Peers)
	slices.SortFunc(resp.Peers, func(a, b *daemonv1.PeerStatus) int {
		if c := strings.Compare(a.Name, b.Name); c != 0 {
			return c
		}
		return strings.Compare(a.PublicKey, b.PublicKey)
	})
	return resp
}

// peerState: connected when a path is set and WireGuard shook hands over it
// recently; idle when the peer is offline and there is no path; connecting
// otherwise.
func peerState(snap peerSnapshot, s wg.PeerStats, now time.Time) (state, p string) {
	switch snap.path {
	case path.PathDirect:
		p = PathDirect
	case path.PathRelayed:
		p = PathRelayed
	}
	fresh := !s.LastHandshake.IsZero() && now.Sub(s.LastHandshake) < path.DefaultHandshakeStale
	switch {
	case p != "" && fresh:
		return PeerConnected, p
	case p == "" && !snap.meta.GetOnline():
		return PeerIdle, ""
	default:
		return PeerConnecting, ""
	}
}

func serverStatus(s ServerStatus) *daemonv1.ServerStatus {
	return &daemonv1.ServerStatus{Url: s.URL, State: s.State, Error: s.Error}
}
