package wg

import (
	"bytes"
	"sync"
	"time"

	"go.uber.org/zap"
	"golang.zx2c4.com/wireguard/device"

	"meshd/internal/keys"
)

// This file makes a peer's first handshake go out as soon as the peer has
// a path, through wireguard-go's public API (no fork).
//
// wireguard-go sends no handshake initiation within RekeyTimeout (5 s) of
// the last one, even when that one never left because the peer had no
// endpoint yet — which is what happens to every packet the system sends to
// a peer while ICE is still looking for a path. Peer.ExpireCurrentKeypairs
// is the one public call that forgets the last attempt; SendKeepalive then
// queues a keepalive and, with no session, sends the initiation (packets
// queued since stay queued and leave once the handshake completes). The
// failed attempts are seen through wireguard-go's logger, which reports
// them with the *device.Peer as an argument.
//
// When both peers initiate at the same moment, each answers the other's
// initiation and drops the answer to its own, and neither session
// completes until the retransmission 5 s later. So only the controlling
// side (the larger public key) initiates on its first path; the controlled
// side waits controlledGrace for it.

// controlledGrace is how long the controlled side of a peer waits after its
// first path for the controlling side's handshake before it initiates one
// itself. The controlling side sets its path within about a round trip of
// ours (ICE nominates on both sides at once).
const controlledGrace = time.Second

// initiationFailedFormat is the format wireguard-go's Errorf uses when a
// handshake initiation could not be sent (device/send.go); its arguments
// are the *device.Peer and the error.
const initiationFailedFormat = "%v - Failed to send handshake initiation: %v"

// noEndpoint is the error wireguard-go reports for a peer without endpoint.
const noEndpoint = "no known endpoint for peer"

// initiationFailures remembers, per wireguard-go peer, when an initiation
// last failed to go out.
type initiationFailures struct {
	mu sync.Mutex
	at map[*device.Peer]time.Time
}

func (f *initiationFailures) note(p *device.Peer) {
	now := time.Now()
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.at == nil {
		f.at = make(map[*device.Peer]time.Time)
	}
	for q, t := range f.at {
		if now.Sub(t) >= device.RekeyTimeout {
			delete(f.at, q) // held back no more; bounds the map
		}
	}
	f.at[p] = now
}

// take reports whether an initiation to p failed less than RekeyTimeout
// ago (so wireguard-go holds the next one back), and forgets it.
func (f *initiationFailures) take(p *device.Peer) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	t, ok := f.at[p]
	delete(f.at, p)
	return ok && time.Since(t) < device.RekeyTimeout
}

// goLogger adapts wireguard-go's logger to log. A handshake initiation
// that failed for want of an endpoint is normal for a peer that has no
// path yet: it is logged at debug level, and noted in failed.
func goLogger(log *zap.Logger, failed *initiationFailures) *device.Logger {
	sugar := log.Named("wireguard-go").Sugar()
	l := &device.Logger{
		Verbosef: sugar.Debugf,
		Errorf: func(format string, args ...any) {
			if format == initiationFailedFormat && len(args) == 2 {
				if p, ok := args[0].(*device.Peer); ok {
					failed.note(p)
				}
				if err, ok := args[1].(error); ok && err.Error() == noEndpoint {
					sugar.Debugf(format, args...)
					return
				}
			}
			sugar.Errorf(format, args...)
		},
	}
	if !log.Core().Enabled(zap.DebugLevel) {
		l.Verbosef = device.DiscardLogf // as wireguard-go does below verbose: no formatting on hot paths
	}
	return l
}

// controls reports whether this device starts the first handshake with
// peer: the larger public key does.
func (d *goDevice) controls(peer keys.Key) bool { return bytes.Compare(d.pub[:], peer[:]) > 0 }

// beforePath runs before a path is given to wireguard-go; d.mu is held. It
// reports whether it is the peer's first. On the controlled side it arms
// wireguard-go's own hold-back for the first path: an initiation to a peer
// without endpoint fails at once (or does nothing when one was tried less
// than RekeyTimeout ago), and for RekeyTimeout no packet the system sends
// can start another one that would cross the controlling side's. (If the
// controlling side does not initiate, graceOver does.)
func (d *goDevice) beforePath(k keys.Key, st *peerState) (first bool) {
	if st.hadPath {
		return false
	}
	// A peer that has an endpoint already got it from the remote's
	// initiation (roaming): that handshake is under way, and an initiation
	// now would go out and cross it.
	if !d.controls(k) && d.peerStats(k).Endpoint == "" {
		if p := d.dev.LookupPeer(device.NoisePublicKey(k)); p != nil {
			_ = p.SendHandshakeInitiation(false)
		}
	}
	return true
}

// afterPath runs after a path was set; d.mu is held. On a first path the
// controlling side initiates now (forgetting a failed attempt that would
// hold the initiation back, unless a handshake completed already) and turns
// the peer's keepalive on; the controlled side does so after
// controlledGrace unless a handshake completed by then.
func (d *goDevice) afterPath(k keys.Key, st *peerState, first bool) {
	if !first {
		return
	}
	st.hadPath = true
	p := d.dev.LookupPeer(device.NoisePublicKey(k))
	if p == nil {
		return
	}
	if !d.controls(k) {
		st.grace = time.AfterFunc(controlledGrace, func() { d.graceOver(k, st) })
		return
	}
	if d.failed.take(p) && d.lastHandshake(k).IsZero() {
		p.ExpireCurrentKeypairs()
	}
	d.keepaliveOn(k, st)
	p.SendKeepalive()
}

// graceOver is the controlled side's turn: initiate unless a handshake
// completed, and turn the keepalive on.
func (d *goDevice) graceOver(k keys.Key, st *peerState) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed || d.peers[k] != st {
		return
	}
	st.grace = nil
	p := d.dev.LookupPeer(device.NoisePublicKey(k))
	if p == nil {
		return
	}
	d.failed.take(p)
	if d.lastHandshake(k).IsZero() {
		p.ExpireCurrentKeypairs() // an attempt may hold the initiation back
	}
	d.keepaliveOn(k, st)
	p.SendKeepalive()
}

// keepaliveOn gives wireguard-go the peer's keepalive; d.mu is held.
func (d *goDevice) keepaliveOn(k keys.Key, st *peerState) {
	if st.keepalive {
		return
	}
	st.keepalive = true
	if st.cfg.PersistentKeepalive == 0 {
		return
	}
	if err := d.dev.IpcSet(keepaliveConfig(k, st.cfg.PersistentKeepalive)); err != nil {
		d.log.Warn("peer keepalive", zap.Stringer("peer", k), zap.Error(err))
	}
}

// lastHandshake returns the time of the peer's last completed handshake
// (zero: none). It reads the whole device's state: call it rarely.
func (d *goDevice) lastHandshake(k keys.Key) time.Time { return d.peerStats(k).LastHandshake }

// peerStats returns what wireguard-go reports of one peer (zero when
// unknown). It reads the whole device's state: call it rarely.
func (d *goDevice) peerStats(k keys.Key) PeerStats {
	s, err := d.dev.IpcGet()
	if err != nil {
		return PeerStats{}
	}
	st, err := parseStats(s)
	if err != nil {
		return PeerStats{}
	}
	for _, ps := range st {
		if ps.PublicKey == k {
			return ps
		}
	}
	return PeerStats{}
}
