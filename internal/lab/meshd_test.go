//go:build linux

package lab

import (
	"encoding/json"
	"net/netip"
	"testing"
)

// TestStatusJSON decodes the contract's shape, int64 as number or string.
func TestStatusJSON(t *testing.T) {
	const doc = `{"state":"up","self":{"name":"a","overlay_ip":"100.64.0.1","public_key":"K","control":{"state":"connected"},"signal":{"state":"connected"}},
	 "peers":[{"name":"b","overlay_ip":"100.64.0.2/32","state":"connected","path":"direct","remote_candidate":{"type":"srflx","address":"198.51.100.11:51820"},"rx_bytes":"1234","tx_bytes":56},
	          {"name":"c","overlay_ip":"100.64.0.3","state":"connecting","path":""}]}`
	var st Status
	if err := json.Unmarshal([]byte(doc), &st); err != nil {
		t.Fatal(err)
	}
	b := st.Peer(netip.MustParseAddr("100.64.0.2"))
	if b == nil || b.Path != "direct" || b.RxBytes != 1234 || b.TxBytes != 56 || b.RemoteCandidate.Type != "srflx" {
		t.Fatalf("peer b = %+v", b)
	}
	if st.Self.Control.State != "connected" || st.Peer(netip.MustParseAddr("100.64.0.3")).State != "connecting" {
		t.Fatalf("status = %+v", st)
	}
	if st.Peer(netip.MustParseAddr("100.64.0.9")) != nil {
		t.Fatal("found a peer that is not there")
	}
}

// TestExpectation pins the design's claims for the matrix.
func TestExpectation(t *testing.T) {
	rh1, rh2, rb := &Router{}, &Router{}, &Router{}
	host := func(r *Router) *Host { return &Host{router: r} }
	pub := member{name: "pub", host: host(nil)}
	h1 := member{name: "h1", nat: Home, host: host(rh1)}
	h2 := member{name: "h2", nat: Home, host: host(rh2)}
	b1 := member{name: "b1", nat: Bare, host: host(rb)}
	b2 := member{name: "b2", nat: Bare, host: host(&Router{})}
	s1 := member{name: "s1", nat: Symmetric, host: host(&Router{})}
	s2 := member{name: "s2", nat: Symmetric, host: host(&Router{})}
	u := member{name: "u", nat: UDPBlocked, host: host(&Router{})}
	lan1 := member{name: "l1", nat: Bare, host: host(rb)} // same LAN as b1
	for _, c := range []struct {
		a, b member
		want expect
	}{
		{pub, h1, expectDirect}, {pub, b1, expectDirect}, {pub, s1, expectDirect},
		{h1, h2, expectDirect}, {b1, lan1, expectDirect},
		{s1, s2, expectRelayed}, {u, pub, expectRelayed}, {h1, u, expectRelayed},
		{b1, b2, expectRecord}, {h1, s1, expectRecord}, {h1, b1, expectRecord},
	} {
		if got := expectation(c.a, c.b); got != c.want {
			t.Errorf("%s ↔ %s: %s, want %s", c.a.name, c.b.name, got, c.want)
		}
		if got := expectation(c.b, c.a); got != c.want {
			t.Errorf("%s ↔ %s: %s, want %s", c.b.name, c.a.name, got, c.want)
		}
	}
}
