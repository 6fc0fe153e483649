package dns

import (
	"fmt"
	"math"
	"slices"
	"testing"

	mdns "github.com/miekg/dns"

	controlv1 "meshd/api/control/v1"
)

// A CNAME loop or a chain longer than maxCNAMEChase is answered SERVFAIL,
// not with the CNAMEs it went round; chains within the bound still resolve.
func TestCNAMELoopsFail(t *testing.T) {
	m := testMap()
	add := func(name, typ, value string, ttl uint32) {
		m.Dns.Records = append(m.Dns.Records, &controlv1.DNSRecord{Name: name, Type: typ, Value: value, Ttl: ttl})
	}
	add("ping", "CNAME", "pong.meshd.internal", 0)
	add("pong", "CNAME", "ping.meshd.internal", 0)
	add("*.wild", "CNAME", "x.wild.meshd.internal", 0) // the wildcard answers its own target
	for i := range maxCNAMEChase + 1 {                 // long0 → long1 → … → long9 → nas
		next := fmt.Sprintf("long%d.meshd.internal", i+1)
		if i == maxCNAMEChase {
			next = "nas.meshd.internal"
		}
		add(fmt.Sprintf("long%d", i), "CNAME", next, 0)
	}
	add("huge", "A", "192.168.1.50", math.MaxUint32)
	_, addr := server(t, m, Options{})

	for _, c := range []struct {
		name  string
		qtype uint16
		rcode int
		want  []string
	}{
		{"ping.meshd.internal", mdns.TypeA, mdns.RcodeServerFailure, nil},
		{"pong.meshd.internal", mdns.TypeAAAA, mdns.RcodeServerFailure, nil},
		{"y.wild.meshd.internal", mdns.TypeA, mdns.RcodeServerFailure, nil},
		{"long0.meshd.internal", mdns.TypeA, mdns.RcodeServerFailure, nil},
		{"long2.meshd.internal", mdns.TypeA, mdns.RcodeSuccess, []string{
			"long2.meshd.internal. CNAME long3.meshd.internal.", "long3.meshd.internal. CNAME long4.meshd.internal.",
			"long4.meshd.internal. CNAME long5.meshd.internal.", "long5.meshd.internal. CNAME long6.meshd.internal.",
			"long6.meshd.internal. CNAME long7.meshd.internal.", "long7.meshd.internal. CNAME long8.meshd.internal.",
			"long8.meshd.internal. CNAME nas.meshd.internal.", "nas.meshd.internal. A 100.64.0.2"}},
		// The target exists without the asked type: the CNAME alone, not a loop.
		{"files.meshd.internal", mdns.TypeAAAA, mdns.RcodeSuccess, []string{"files.meshd.internal. CNAME nas.meshd.internal."}},
		// Asked for the CNAME itself: no chasing.
		{"ping.meshd.internal", mdns.TypeCNAME, mdns.RcodeSuccess, []string{"ping.meshd.internal. CNAME pong.meshd.internal."}},
	} {
		resp := ask(t, addr, c.name, c.qtype)
		if resp.Rcode != c.rcode || !slices.Equal(answers(resp), c.want) {
			t.Errorf("%s %s: rcode %s answers %q, want %s %q", c.name, mdns.TypeToString[c.qtype],
				mdns.RcodeToString[resp.Rcode], answers(resp), mdns.RcodeToString[c.rcode], c.want)
		}
	}
	resp := ask(t, addr, "huge.meshd.internal", mdns.TypeA)
	if len(resp.Answer) != 1 || resp.Answer[0].Header().Ttl != MaxRecordTTL {
		t.Fatalf("a record with TTL 2^32-1: %v, want TTL %d", resp.Answer, MaxRecordTTL)
	}
}
