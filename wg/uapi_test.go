package wg

import (
	"strings"
	"testing"
	"time"

	"meshd/internal/keys"
)

func TestPeerConfig(t *testing.T) {
	var k keys.Key
	k[0] = 0xab
	p := Peer{PublicKey: k, AllowedIPs: pfx("100.64.0.2/32", "10.1.0.0/24"), PersistentKeepalive: 25 * time.Second}
	hdr := "public_key=ab" + strings.Repeat("00", 31) + "\n"

	// New peer: replace (there is nothing to keep).
	want := hdr + "replace_allowed_ips=true\nallowed_ip=100.64.0.2/32\nallowed_ip=10.1.0.0/24\npersistent_keepalive_interval=25\n"
	if got := peerConfig(p, nil); got != want {
		t.Fatalf("new peer:\n%s\nwant:\n%s", got, want)
	}
	// Only additions: never a moment without the old allowed IPs.
	old := Peer{PublicKey: k, AllowedIPs: pfx("100.64.0.2/32")}
	want = hdr + "allowed_ip=10.1.0.0/24\npersistent_keepalive_interval=25\n"
	if got := peerConfig(p, &old); got != want {
		t.Fatalf("addition:\n%s\nwant:\n%s", got, want)
	}
	// A removal needs the replace.
	old = Peer{PublicKey: k, AllowedIPs: pfx("100.64.0.2/32", "10.9.0.0/16")}
	if got := peerConfig(p, &old); !strings.Contains(got, "replace_allowed_ips=true\n") {
		t.Fatalf("removal without replace:\n%s", got)
	}
}

func TestParseStats(t *testing.T) {
	in := "private_key=00\nlisten_port=51820\n" +
		"public_key=01" + strings.Repeat("00", 31) + "\nendpoint=192.0.2.1:51820\nlast_handshake_time_sec=1700000000\nlast_handshake_time_nsec=5\nrx_bytes=10\ntx_bytes=20\nallowed_ip=100.64.0.2/32\n" +
		"public_key=02" + strings.Repeat("00", 31) + "\nendpoint=[100::3]:0\nlast_handshake_time_sec=0\nlast_handshake_time_nsec=0\nrx_bytes=0\ntx_bytes=0\n" +
		"errno=0\n"
	st, err := parseStats(in)
	if err != nil {
		t.Fatal(err)
	}
	if len(st) != 2 {
		t.Fatalf("%d peers", len(st))
	}
	a, b := st[0], st[1]
	if a.PublicKey[0] != 1 || a.Endpoint != "192.0.2.1:51820" || a.Relayed || a.RxBytes != 10 || a.TxBytes != 20 ||
		!a.LastHandshake.Equal(time.Unix(1700000000, 5)) {
		t.Fatalf("peer 1: %+v", a)
	}
	if b.PublicKey[0] != 2 || !b.Relayed || !b.LastHandshake.IsZero() {
		t.Fatalf("peer 2: %+v", b)
	}
	if _, err := parseStats("errno=22\n"); err == nil {
		t.Fatal("errno ignored")
	}
}
