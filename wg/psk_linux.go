package wg

import (
	"fmt"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"meshd/internal/keys"
)

var _ PresharedKeyer = (*kernelDevice)(nil)

func (d *kernelDevice) SetPresharedKey(k keys.Key, psk *[32]byte) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, err := d.lookup(k); err != nil {
		return err
	}
	var key wgtypes.Key // zero: none
	if psk != nil {
		key = wgtypes.Key(*psk)
	}
	c := wgtypes.PeerConfig{PublicKey: wgtypes.Key(k), UpdateOnly: true, PresharedKey: &key}
	if err := d.wgc.ConfigureDevice(d.name, wgtypes.Config{Peers: []wgtypes.PeerConfig{c}}); err != nil {
		return fmt.Errorf("wg: set preshared key %s: %w", k, err)
	}
	return nil
}
