package all

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	natrelay "meshd/nat/relay"
)

func fakeLookup(addrs []string, err error) lookupFunc {
	return func(_ context.Context, network, host string) ([]netip.Addr, error) {
		if network != "ip4" {
			return nil, errors.New("asked for " + network)
		}
		var out []netip.Addr
		for _, a := range addrs {
			out = append(out, netip.MustParseAddr(a))
		}
		return out, err
	}
}

// TestRelayIPForHost: with a host name in --public-url the relay announces
// what the name resolves to, not the container's or VM's own address.
func TestRelayIPForHost(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		host   string
		lookup lookupFunc
		want   string // "" for an error naming --relay-ip
	}{
		{"203.0.113.10", fakeLookup(nil, errors.New("not asked")), "203.0.113.10"},
		{"vpn.example.org", fakeLookup([]string{"203.0.113.10"}, nil), "203.0.113.10"},
		{"vpn.example.org", fakeLookup([]string{"127.0.1.1", "::ffff:198.51.100.4"}, nil), "198.51.100.4"},
		{"myhost", fakeLookup([]string{"127.0.1.1"}, nil), ""},
		{"vpn.example.org", fakeLookup(nil, errors.New("no such host")), ""},
		{"2001:db8::1", fakeLookup(nil, errors.New("not asked")), ""},
	} {
		got, err := relayIPForHost(ctx, tc.host, tc.lookup)
		if tc.want == "" {
			if err == nil || !strings.Contains(err.Error(), "--relay-ip") {
				t.Errorf("%s: got %v, %v; want an error naming --relay-ip", tc.host, got, err)
			}
			continue
		}
		if err != nil || got != netip.MustParseAddr(tc.want) {
			t.Errorf("%s: got %v, %v; want %s", tc.host, got, err, tc.want)
		}
	}
}

func TestPublicURLWarning(t *testing.T) {
	none := netip.Addr{}
	pub := netip.MustParseAddr("203.0.113.10")
	for _, tc := range []struct {
		host string
		seen netip.Addr
		want string // "" for no warning, else a part of it
	}{
		{"10.0.0.5", pub, "--public-url https://203.0.113.10:33073"}, // 1:1 NAT seen by STUN
		{"172.31.4.5", none, "--public-url"},                         // private, nothing seen
		{"100.64.3.3", none, "--public-url"},                         // CGNAT
		{"203.0.113.10", pub, ""},                                    // public and right
		{"203.0.113.10", none, ""},                                   // public, nothing seen
		{"198.51.100.2", netip.MustParseAddr("198.51.100.2"), ""},
	} {
		got := publicURLWarning(tc.host, tc.seen, "33073")
		if (tc.want == "") != (got == "") || !strings.Contains(got, tc.want) {
			t.Errorf("host %s seen %v: warning %q, want one with %q", tc.host, tc.seen, got, tc.want)
		}
	}
}

func TestExternalSTUN(t *testing.T) {
	ours := []string{"stun:198.51.100.1:3478", "turn:198.51.100.1:3478?transport=udp"}
	if got := externalSTUN(append([]string{"turn:x:1"}, ours...), ours); got != "" {
		t.Errorf("external STUN among our own URLs: %q", got)
	}
	if got := externalSTUN([]string{"stun:stun.example.org"}, ours); got != "stun.example.org:3478" {
		t.Errorf("got %q", got)
	}
}

// TestSTUNAddress asks a real STUN server (the relay, on loopback) for
// this host's address.
func TestSTUNAddress(t *testing.T) {
	s, err := natrelay.New(natrelay.Options{Log: zaptest.NewLogger(t), Secret: []byte("a-secret-for-the-test"),
		PublicIP: netip.MustParseAddr("127.0.0.1"), ListenAddr: "127.0.0.1:0", NoTCP: true, Workers: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ip, err := stunAddress(ctx, s.UDPAddr().String())
	if err != nil || ip != netip.MustParseAddr("127.0.0.1") {
		t.Fatalf("got %v, %v; want 127.0.0.1", ip, err)
	}
}

// TestDockerfileExample: the Dockerfile's `docker run` example publishes
// the relayed port range it passes in --relay-ports and gives --relay-ip,
// without which relayed addresses would carry the container's address.
func TestDockerfileExample(t *testing.T) {
	b, err := os.ReadFile("../../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	var example strings.Builder
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "#   ") {
			example.WriteString(strings.TrimSuffix(strings.TrimPrefix(line, "#   "), "\\") + " ")
		}
	}
	ex := example.String()
	m := regexp.MustCompile(`--relay-ports (\d+-\d+)`).FindStringSubmatch(ex)
	if m == nil {
		t.Fatalf("the example gives no --relay-ports:\n%s", ex)
	}
	if !strings.Contains(ex, "-p "+m[1]+":"+m[1]+"/udp") {
		t.Errorf("the example does not publish the relayed ports %s/udp:\n%s", m[1], ex)
	}
	if !strings.Contains(ex, "--relay-ip ") {
		t.Errorf("the example gives no --relay-ip:\n%s", ex)
	}
	if !regexp.MustCompile(`(?m)^EXPOSE .*` + m[1] + `/udp`).Match(b) {
		t.Errorf("EXPOSE lacks %s/udp", m[1])
	}
}
