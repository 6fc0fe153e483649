package wg

import (
	"fmt"

	"golang.zx2c4.com/wireguard/device"

	"meshd/internal/keys"
)

// PresharedKeyer is a Device that sets a WireGuard pre-shared key per peer
// (every mode: wireguard-go through UAPI, kernel WireGuard through
// wgctrl). The agent installs the post-quantum keys of internal/pqpsk with
// it. WireGuard mixes the key into each new handshake only: the session in
// use goes on with the keys it has, so a change never drops a packet; a
// handshake with a peer that holds another key fails (and WireGuard
// retries it), while the session in use keeps working until it expires.
type PresharedKeyer interface {
	// SetPresharedKey sets the peer's pre-shared key; nil removes it.
	// Returns ErrUnknownPeer for a peer SetPeer has not added.
	SetPresharedKey(peer keys.Key, psk *[32]byte) error
}

var _ PresharedKeyer = (*goDevice)(nil)

// pskConfig sets an existing peer's pre-shared key (all zeros: none, as
// for `wg set`).
func pskConfig(k keys.Key, psk *[32]byte) string {
	var z [32]byte
	if psk == nil {
		psk = &z
	}
	return fmt.Sprintf("public_key=%s\nupdate_only=true\npreshared_key=%x\n", k.Hex(), psk[:])
}

func (d *goDevice) SetPresharedKey(k keys.Key, psk *[32]byte) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, err := d.lookup(k); err != nil {
		return err
	}
	if err := d.dev.IpcSet(pskConfig(k, psk)); err != nil {
		return fmt.Errorf("wg: set preshared key %s: %w", k, err)
	}
	return nil
}

// Rekeyer is a Device that can start a new handshake with a peer at once
// while keeping the session in use (unlike Rehandshaker, which drops it):
// a new pre-shared key then protects traffic from the next round trip on,
// not from the next rekey (up to two minutes later). If the handshake
// fails, the session in use goes on until it expires and WireGuard retries
// as usual. Userspace and netstack devices are; kernel WireGuard uses a new
// key from its next rekey.
type Rekeyer interface {
	Rekey(peer keys.Key) error
}

var _ Rekeyer = (*goDevice)(nil)

func (d *goDevice) Rekey(k keys.Key) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	st, err := d.lookup(k)
	if err != nil {
		return err
	}
	if !st.hadPath {
		return nil // the first path starts the handshake
	}
	if p := d.dev.LookupPeer(device.NoisePublicKey(k)); p != nil {
		// Held back when an initiation went out less than 5 s ago: that
		// one (or its retry) will use the key.
		return p.SendHandshakeInitiation(false)
	}
	return nil
}

// SessionDropper is a Device that can forget a peer's session at once, both
// ways: packets of the remote's session are dropped, and the next packet
// sent waits for a new handshake. The agent uses it when strict
// post-quantum mode puts a key nobody knows where there was none: the
// session in use was made without a pre-shared key and would otherwise go
// on carrying traffic until it expires (up to three minutes). Userspace and
// netstack devices are; kernel WireGuard's session runs until its rekey.
type SessionDropper interface {
	DropSession(peer keys.Key) error
}

var _ SessionDropper = (*goDevice)(nil)

func (d *goDevice) DropSession(k keys.Key) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, err := d.lookup(k); err != nil {
		return err
	}
	if p := d.dev.LookupPeer(device.NoisePublicKey(k)); p != nil {
		// What wireguard-go does when a session's keys run out: both
		// directions' keys and the handshake in progress go.
		p.ZeroAndFlushAll()
	}
	return nil
}
