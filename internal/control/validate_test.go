package control_test

import (
	"context"
	"math"
	"strings"
	"testing"

	"connectrpc.com/connect"

	adminv1 "meshd/api/admin/v1"
	"meshd/internal/control"
	"meshd/internal/control/controltest"
)

// Every number of the admin API is range-checked before it becomes a
// duration or a count: 18446744074 seconds used to wrap to 0.29 s as a
// login expiration and log every peer out.
func TestAdminRefusesNumbersOutOfRange(t *testing.T) {
	h := controltest.NewHarness(t, 1)
	ctx := context.Background()
	must[adminv1.Route](t)(h.Admin.CreateRoute(ctx, connect.NewRequest(&adminv1.CreateRouteRequest{Network: "192.168.7.0/24", Peers: []string{"agent-0"}})))
	must[adminv1.DNSRecord](t)(h.Admin.CreateDNSRecord(ctx, connect.NewRequest(&adminv1.CreateDNSRecordRequest{Name: "nas", Type: "A", Value: "192.168.7.10"})))
	const wrap = 18446744074 // seconds: × 1e9 wraps int64 nanoseconds to 0.29 s
	for _, tc := range []struct {
		name string
		call func() error
		want string
	}{
		{"login expiration wraps", func() error {
			return account(h, &adminv1.UpdateAccountRequest{LoginExpirationSeconds: ptr(int64(wrap))})
		}, "60 to 31536000"},
		{"login expiration max int64", func() error {
			return account(h, &adminv1.UpdateAccountRequest{LoginExpirationSeconds: ptr(int64(math.MaxInt64))})
		}, "0 (off) or 1m0s to 365 days"},
		{"login expiration negative", func() error { return account(h, &adminv1.UpdateAccountRequest{LoginExpirationSeconds: ptr(int64(-1))}) }, "out of range"},
		{"login expiration too short", func() error { return account(h, &adminv1.UpdateAccountRequest{LoginExpirationSeconds: ptr(int64(59))}) }, "out of range"},
		{"ephemeral offline wraps", func() error {
			return account(h, &adminv1.UpdateAccountRequest{EphemeralOfflineSeconds: ptr(int64(wrap))})
		}, "60 to 31536000"},
		{"ephemeral offline min int64", func() error {
			return account(h, &adminv1.UpdateAccountRequest{EphemeralOfflineSeconds: ptr(int64(math.MinInt64))})
		}, "out of range"},
		{"setup key expiry wraps", func() error { return setupKey(h, &adminv1.CreateSetupKeyRequest{ExpiresInSeconds: wrap}) }, "0 (never expires) or"},
		{"setup key expiry max int64", func() error { return setupKey(h, &adminv1.CreateSetupKeyRequest{ExpiresInSeconds: math.MaxInt64}) }, "out of range"},
		{"setup key expiry negative", func() error { return setupKey(h, &adminv1.CreateSetupKeyRequest{ExpiresInSeconds: -1}) }, "out of range"},
		{"setup key usage max int32", func() error { return setupKey(h, &adminv1.CreateSetupKeyRequest{UsageLimit: math.MaxInt32}) }, "want 0 to 1000000 (0: unlimited)"},
		{"setup key usage negative", func() error { return setupKey(h, &adminv1.CreateSetupKeyRequest{UsageLimit: -1}) }, "out of range"},
		{"record ttl max uint32", func() error {
			_, err := h.Admin.CreateDNSRecord(ctx, connect.NewRequest(&adminv1.CreateDNSRecordRequest{Name: "big", Type: "A", Value: "10.1.1.1", Ttl: math.MaxUint32}))
			return err
		}, "want 1 to 86400 seconds"},
		{"record ttl update", func() error {
			_, err := h.Admin.UpdateDNSRecord(ctx, connect.NewRequest(&adminv1.UpdateDNSRecordRequest{Id: "nas", Ttl: ptr(uint32(86401))}))
			return err
		}, "want 1 to 86400 seconds"},
		{"route metric max int32", func() error {
			_, err := h.Admin.CreateRoute(ctx, connect.NewRequest(&adminv1.CreateRouteRequest{Network: "192.168.8.0/24", Peers: []string{"agent-0"}, Metric: math.MaxInt32}))
			return err
		}, "want 1 to 9999"},
		{"route metric update negative", func() error {
			_, err := h.Admin.UpdateRoute(ctx, connect.NewRequest(&adminv1.UpdateRouteRequest{Id: "192.168.7.0/24", Metric: ptr(int32(math.MinInt32))}))
			return err
		}, "want 1 to 9999"},
		{"events limit max int32", func() error {
			_, err := h.Admin.ListEvents(ctx, connect.NewRequest(&adminv1.ListEventsRequest{Limit: math.MaxInt32}))
			return err
		}, "want 1 to 10000"},
		{"events limit negative", func() error {
			_, err := h.Admin.ListEvents(ctx, connect.NewRequest(&adminv1.ListEventsRequest{Limit: -5}))
			return err
		}, "want 1 to 10000"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantCode(t, tc.call(), connect.CodeInvalidArgument, tc.want)
		})
	}
	acct := must[adminv1.Account](t)(h.Admin.GetAccount(ctx, connect.NewRequest(&adminv1.GetAccountRequest{})))
	if acct.LoginExpirationSeconds != 0 || acct.EphemeralOfflineSeconds != 600 {
		t.Fatalf("account changed by refused updates: %v", acct)
	}
	if !h.Agents[0].Connected() {
		t.Fatalf("agent-0 was disconnected: %v", h.Agents[0].SyncErr())
	}
	// The bounds themselves are accepted and read back as given.
	acct = must[adminv1.Account](t)(h.Admin.UpdateAccount(ctx, connect.NewRequest(&adminv1.UpdateAccountRequest{
		LoginExpirationSeconds: ptr(int64(365 * 86400)), EphemeralOfflineSeconds: ptr(int64(60))})))
	if acct.LoginExpirationSeconds != 365*86400 || acct.EphemeralOfflineSeconds != 60 {
		t.Fatalf("account = %v", acct)
	}
	k := must[adminv1.SetupKey](t)(h.Admin.CreateSetupKey(ctx, connect.NewRequest(&adminv1.CreateSetupKeyRequest{Name: "year",
		ExpiresInSeconds: 365 * 86400, UsageLimit: 1_000_000})))
	if got := k.Expires.AsTime().Sub(k.Created.AsTime()).Hours(); got < 365*24-1 || k.UsageLimit != 1_000_000 {
		t.Fatalf("setup key expires after %vh, limit %d", got, k.UsageLimit)
	}
	r := must[adminv1.DNSRecord](t)(h.Admin.UpdateDNSRecord(ctx, connect.NewRequest(&adminv1.UpdateDNSRecordRequest{Id: "nas", Ttl: ptr(uint32(86400))})))
	if r.Ttl != 86400 {
		t.Fatalf("record = %v", r)
	}
}

func account(h *controltest.Harness, m *adminv1.UpdateAccountRequest) error {
	_, err := h.Admin.UpdateAccount(context.Background(), connect.NewRequest(m))
	return err
}

func setupKey(h *controltest.Harness, m *adminv1.CreateSetupKeyRequest) error {
	_, err := h.Admin.CreateSetupKey(context.Background(), connect.NewRequest(m))
	return err
}

// An overlay or a mesh domain that would break the machines that join is
// refused with the reason.
func TestAdminRefusesBadOverlayAndDomain(t *testing.T) {
	h := controltest.NewHarness(t, 1, controltest.WithOptions(func(o *control.Options) {
		o.Relays.URLs = []string{"stun:198.18.0.1:3478", "turn:198.18.0.1:3478?transport=udp"}
	}))
	ctx := context.Background()
	must[adminv1.Route](t)(h.Admin.CreateRoute(ctx, connect.NewRequest(&adminv1.CreateRouteRequest{Network: "10.20.0.0/16", Peers: []string{"agent-0"}})))
	for _, tc := range []struct {
		overlay string
		code    connect.Code
		want    string
	}{
		{"127.0.0.0/8", connect.CodeInvalidArgument, "loopback"},
		{"127.0.0.0/16", connect.CodeInvalidArgument, "loopback"},
		{"169.254.0.0/16", connect.CodeInvalidArgument, "link-local"},
		{"224.0.0.0/16", connect.CodeInvalidArgument, "multicast"},
		{"0.0.0.0/16", connect.CodeInvalidArgument, "this network"},
		{"240.0.0.0/16", connect.CodeInvalidArgument, "reserved"},
		{"10.0.0.0/8", connect.CodeInvalidArgument, "from /10 to /29"},
		{"0.0.0.0/0", connect.CodeInvalidArgument, "from /10 to /29"},
		{"100.64.0.0/30", connect.CodeInvalidArgument, "from /10 to /29"},
		{"fd00::/64", connect.CodeInvalidArgument, "IPv4"},
		{"10.20.30.0/24", connect.CodeFailedPrecondition, "overlaps the network 10.20.0.0/16 of a route"},
		{"198.18.0.0/16", connect.CodeInvalidArgument, "contains 198.18.0.1, the address of relay stun:198.18.0.1:3478"},
	} {
		t.Run("overlay "+tc.overlay, func(t *testing.T) {
			wantCode(t, account(h, &adminv1.UpdateAccountRequest{OverlayNetwork: ptr(tc.overlay)}), tc.code, tc.want)
		})
	}
	for _, tc := range []struct{ domain, want string }{
		{"com", "at least two labels"},
		{"internal", "at least two labels"},
		{"localhost", "localhost"},
		{"mesh.localhost", "localhost"},
		{"local", "multicast DNS"},
		{"mesh.local", "multicast DNS"},
		{"in-addr.arpa", "reverse lookups"},
		{"64.100.in-addr.arpa", "reverse lookups"},
		{"ip6.arpa", "reverse lookups"},
		{"co.uk", "public suffix"},
		{"github.io", "public suffix"},
		{"home.arpa", "public suffix"},
		{"x.onion", "Tor"},
		{"*.mesh.lan", "wildcards"},
		{"me sh.lan", "not a DNS name"},
	} {
		t.Run("domain "+tc.domain, func(t *testing.T) {
			wantCode(t, account(h, &adminv1.UpdateAccountRequest{DnsDomain: ptr(tc.domain)}), connect.CodeInvalidArgument, tc.want)
			_, err := h.Admin.UpdateDNSSettings(ctx, connect.NewRequest(&adminv1.UpdateDNSSettingsRequest{Domain: ptr(tc.domain)}))
			wantCode(t, err, connect.CodeInvalidArgument, tc.want)
		})
	}
	acct := must[adminv1.Account](t)(h.Admin.GetAccount(ctx, connect.NewRequest(&adminv1.GetAccountRequest{})))
	if acct.OverlayNetwork != control.DefaultOverlayNetwork || acct.DnsDomain != control.DefaultDNSDomain {
		t.Fatalf("account changed by refused updates: %v", acct)
	}
	// What a mesh may use is still accepted.
	for _, ok := range []struct{ overlay, domain string }{{"100.64.0.0/10", "mesh.example.com"}, {"100.64.0.0/24", "mesh.home.arpa"}, {"100.64.0.0/16", "corp.internal"}} {
		acct = must[adminv1.Account](t)(h.Admin.UpdateAccount(ctx, connect.NewRequest(&adminv1.UpdateAccountRequest{
			OverlayNetwork: ptr(ok.overlay), DnsDomain: ptr(ok.domain)})))
		if acct.OverlayNetwork != ok.overlay || acct.DnsDomain != ok.domain {
			t.Fatalf("account = %v, want %v", acct, ok)
		}
	}
}

// What an agent says about itself is bounded and stored without control
// characters; names an admin gives are refused with them.
func TestUntrustedTextIsBoundedAndCleaned(t *testing.T) {
	h := controltest.NewHarness(t, 0)
	ctx := context.Background()

	// 64 KiB fits in a Login message; the field limit refuses it.
	big := h.NewAgent(controltest.AgentOptions{Hostname: strings.Repeat("a", 64<<10)})
	wantCode(t, big.Login(""), connect.CodeInvalidArgument, "peer hostname is 65536 bytes long: at most 253")
	// 1 MiB is larger than any Login message may be: refused before it is read.
	huge := h.NewAgent(controltest.AgentOptions{Hostname: strings.Repeat("a", 1<<20)})
	wantCode(t, huge.Login(""), connect.CodeResourceExhausted, "larger than configured max")
	if ps := must[adminv1.ListPeersResponse](t)(h.Admin.ListPeers(ctx, connect.NewRequest(&adminv1.ListPeersRequest{}))); len(ps.Peers) != 0 {
		t.Fatalf("a refused login registered %v", ps.Peers)
	}

	evil := "\x1b]0;pwn\x07ev\ril\u202e\x00box\u009b2J"
	a := h.AddAgent(controltest.AgentOptions{Hostname: evil})
	a.WaitFor(t, "first map", func(*controltest.Map) bool { return true })
	p := must[adminv1.Peer](t)(h.Admin.GetPeer(ctx, connect.NewRequest(&adminv1.GetPeerRequest{Id: a.Self.PeerId})))
	for _, s := range []string{p.Hostname, p.Name, p.DnsName, p.Os, p.Version} {
		if strings.IndexFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) || r == '\u202e' }) >= 0 {
			t.Fatalf("peer stored with control characters: %q", s)
		}
	}
	if p.Hostname != "]0;pwnevilbox2J" {
		t.Fatalf("hostname = %q", p.Hostname)
	}

	for _, name := range []string{"eng\x1b[2J", "a\rb", "x\u202egnp.exe", "nul\x00", strings.Repeat("g", 129)} {
		_, err := h.Admin.CreateGroup(ctx, connect.NewRequest(&adminv1.CreateGroupRequest{Name: name}))
		if connect.CodeOf(err) != connect.CodeInvalidArgument {
			t.Fatalf("group %q: err = %v, want invalid argument", name, err)
		}
		_, err = h.Admin.CreateAdminToken(ctx, connect.NewRequest(&adminv1.CreateAdminTokenRequest{Name: name}))
		if connect.CodeOf(err) != connect.CodeInvalidArgument {
			t.Fatalf("token %q: err = %v, want invalid argument", name, err)
		}
		_, err = h.Admin.CreateSetupKey(ctx, connect.NewRequest(&adminv1.CreateSetupKeyRequest{Name: name}))
		if connect.CodeOf(err) != connect.CodeInvalidArgument {
			t.Fatalf("setup key %q: err = %v, want invalid argument", name, err)
		}
	}
	_, err := h.Admin.CreatePolicy(ctx, connect.NewRequest(&adminv1.CreatePolicyRequest{Name: "p", Description: "x\x1b[31m",
		Sources: []string{"All"}, Destinations: []string{"All"}}))
	wantCode(t, err, connect.CodeInvalidArgument, "policy description")
	_, err = h.Admin.CreatePolicy(ctx, connect.NewRequest(&adminv1.CreatePolicyRequest{Name: "p", Description: strings.Repeat("d", 1025),
		Sources: []string{"All"}, Destinations: []string{"All"}}))
	wantCode(t, err, connect.CodeInvalidArgument, "at most 1024")
}

// A setup key pasted with blanks around it still joins; a huge one is
// refused before it is hashed.
func TestSetupKeyIsTrimmed(t *testing.T) {
	h := controltest.NewHarness(t, 0)
	key := createKey(t, h, &adminv1.CreateSetupKeyRequest{Name: "pasted"})
	a := h.NewAgent(controltest.AgentOptions{Hostname: "pasted"})
	if err := a.Login("  " + key + "\r\n"); err != nil {
		t.Fatalf("login with the key and blanks: %v", err)
	}
	b := h.NewAgent(controltest.AgentOptions{Hostname: "long"})
	if err := b.Login(strings.Repeat(key, 1000)); err == nil || !strings.Contains(err.Error(), "35000 bytes long") {
		t.Fatalf("login with a 35000-byte key: %v", err)
	}
}
