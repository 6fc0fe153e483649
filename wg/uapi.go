package wg

import (
	"bufio"
	"encoding/hex"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"meshd/internal/keys"
	"meshd/wg/bind"
)

// This file speaks wireguard-go's UAPI text protocol
// (https://www.wireguard.com/xplatform/): the same lines `wg set` sends.

// peerConfig returns the UAPI lines that add or update p. Allowed IPs are
// replaced only when an old one goes away (replacing briefly leaves the peer
// with no allowed IPs, so a pure addition is sent as an addition).
func peerConfig(p Peer, old *Peer) string {
	var b strings.Builder
	fmt.Fprintf(&b, "public_key=%s\n", p.PublicKey.Hex())
	add := p.AllowedIPs
	if old != nil && containsAll(p.AllowedIPs, old.AllowedIPs) {
		add = nil
		for _, a := range p.AllowedIPs {
			if !slices.Contains(old.AllowedIPs, a) {
				add = append(add, a)
			}
		}
	} else {
		b.WriteString("replace_allowed_ips=true\n")
	}
	for _, a := range add {
		fmt.Fprintf(&b, "allowed_ip=%s\n", a.Masked())
	}
	fmt.Fprintf(&b, "persistent_keepalive_interval=%d\n", int(p.PersistentKeepalive/time.Second))
	return b.String()
}

func containsAll(set, sub []netip.Prefix) bool {
	for _, s := range sub {
		if !slices.Contains(set, s) {
			return false
		}
	}
	return true
}

// endpointConfig points an existing peer at endpoint (an ip:port).
func endpointConfig(k keys.Key, endpoint string) string {
	return fmt.Sprintf("public_key=%s\nupdate_only=true\nendpoint=%s\n", k.Hex(), endpoint)
}

// keepaliveConfig sets an existing peer's persistent keepalive.
func keepaliveConfig(k keys.Key, d time.Duration) string {
	return fmt.Sprintf("public_key=%s\nupdate_only=true\npersistent_keepalive_interval=%d\n", k.Hex(), int(d/time.Second))
}

// removeConfig removes a peer.
func removeConfig(k keys.Key) string {
	return fmt.Sprintf("public_key=%s\nremove=true\n", k.Hex())
}

// parseStats reads the peers out of a UAPI get response.
func parseStats(s string) ([]PeerStats, error) {
	var out []PeerStats
	var cur *PeerStats
	var sec, nsec int64
	flush := func() {
		if cur != nil {
			if sec != 0 || nsec != 0 {
				cur.LastHandshake = time.Unix(sec, nsec)
			}
			out = append(out, *cur)
		}
		sec, nsec = 0, 0
	}
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		key, val, ok := strings.Cut(sc.Text(), "=")
		if !ok {
			continue
		}
		var err error
		switch key {
		case "public_key":
			flush()
			var k keys.Key
			k, err = keyFromHex(val)
			cur = &PeerStats{PublicKey: k}
		case "endpoint":
			if cur != nil {
				cur.Endpoint = val
				cur.Relayed = bind.IsRelayAddr(val)
			}
		case "last_handshake_time_sec":
			sec, err = strconv.ParseInt(val, 10, 64)
		case "last_handshake_time_nsec":
			nsec, err = strconv.ParseInt(val, 10, 64)
		case "preshared_key":
			if cur != nil && strings.Trim(val, "0") != "" {
				var k keys.Key
				if k, err = keyFromHex(val); err == nil {
					cur.PresharedKey = (*[32]byte)(&k)
				}
			}
		case "rx_bytes":
			if cur != nil {
				cur.RxBytes, err = strconv.ParseInt(val, 10, 64)
			}
		case "tx_bytes":
			if cur != nil {
				cur.TxBytes, err = strconv.ParseInt(val, 10, 64)
			}
		case "errno":
			if val != "0" {
				return nil, fmt.Errorf("wg: uapi get: errno %s", val)
			}
		}
		if err != nil {
			return nil, fmt.Errorf("wg: uapi get: %s: %w", key, err)
		}
	}
	flush()
	return out, sc.Err()
}

func keyFromHex(s string) (keys.Key, error) {
	b, err := hex.DecodeString(s)
	if err != nil {
		return keys.Key{}, keys.ErrBadKey
	}
	return keys.FromBytes(b)
}
