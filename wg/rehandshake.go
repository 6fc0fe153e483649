package wg

import (
	"time"

	"golang.zx2c4.com/wireguard/device"

	"meshd/internal/keys"
)

// Rehandshaker is a Device that can start a fresh handshake with a peer at
// once. Userspace and netstack devices are.
type Rehandshaker interface {
	// Rehandshake tells the device that the remote's WireGuard state for
	// this peer is new (its agent restarted, or brought its tunnel down
	// and up) since the time since: the session this device holds is one
	// the remote forgot. If the peer had a path and its last handshake
	// completed before since, the old keys are dropped and an initiation
	// goes out now, on the current path; call it again after each new path
	// until a handshake completes (an initiation sent on a path that was
	// replaced at once is lost). Otherwise it does nothing: a first path
	// starts the handshake anyway (see Device), and a handshake after since
	// is with the new remote.
	//
	// Without it, the remote (when it is the side that waits for the
	// other's first handshake) waits out its grace of a second while this
	// side goes on sending with keys the remote no longer has.
	Rehandshake(peer keys.Key, since time.Time) error
}

var _ Rehandshaker = (*goDevice)(nil)

func (d *goDevice) Rehandshake(k keys.Key, since time.Time) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	st, err := d.lookup(k)
	if err != nil {
		return err
	}
	if hs := d.lastHandshake(k); !st.hadPath || hs.IsZero() || !hs.Before(since) {
		return nil
	}
	p := d.dev.LookupPeer(device.NoisePublicKey(k))
	if p == nil {
		return nil
	}
	// ExpireCurrentKeypairs also forgets when the last initiation went
	// out, so the keepalive's initiation is not held back.
	p.ExpireCurrentKeypairs()
	d.failed.take(p)
	p.SendKeepalive()
	return nil
}
