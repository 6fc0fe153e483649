package control

// Validation of what enters control: numbers are range-checked before they
// become durations (an int64 of seconds overflows time.Duration and wraps
// to a tiny value), text is bounded and kept free of terminal control
// characters, and networks and domains that would break the machines that
// join (loopback as the overlay, "com" as the mesh domain) are refused with
// the reason.

import (
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"connectrpc.com/connect"
	"golang.org/x/net/publicsuffix"

	controlv1 "meshd/api/control/v1"
	"meshd/store"
)

const day = 24 * time.Hour

// Bounds of the numbers the admin API accepts.
const (
	minLoginExpiration   = time.Minute
	maxLoginExpiration   = 365 * day
	minEphemeralOffline  = time.Minute
	maxEphemeralOffline  = 365 * day
	minSetupKeyExpiry    = time.Minute
	maxSetupKeyExpiry    = 365 * day
	maxSetupKeyUsage     = 1_000_000
	maxEventsListed      = 10_000
	defaultEventsListed  = 100
	defaultRecordTTL     = 300
	maxRecordTTL         = 86_400 // a day: a wrong record must not stick in caches for longer
	minOverlayBits       = 10     // 100.64.0.0/10: more is not a mesh's network, it is everyone's LAN
	maxOverlayBits       = 29     // 6 addresses
	maxNameLen           = 128
	maxDescriptionLen    = 1024
	maxTXTLen            = 255
	maxHostnameLen       = 253
	maxOSLen, maxVersion = 128, 128
	maxSetupKeyLen       = 256
)

// checkSeconds range-checks a duration given in seconds: 0 when zero is
// allowed (it means zeroMeans), else lo to hi.
func checkSeconds(what string, s int64, zeroMeans string, lo, hi time.Duration) (time.Duration, error) {
	if s == 0 && zeroMeans != "" {
		return 0, nil
	}
	if s < int64(lo/time.Second) || s > int64(hi/time.Second) {
		want := fmt.Sprintf("%s to %s (%d to %d seconds)", human(lo), human(hi), int64(lo/time.Second), int64(hi/time.Second))
		if zeroMeans != "" {
			want = "0 (" + zeroMeans + ") or " + want
		}
		return 0, invalidf("%s %d s is out of range: want %s", what, s, want)
	}
	return time.Duration(s) * time.Second, nil
}

// checkCount range-checks a count: lo to hi.
func checkCount(what string, n, lo, hi int64, hint string) error {
	if n < lo || n > hi {
		return invalidf("%s %d is out of range: want %d to %d%s", what, n, lo, hi, hint)
	}
	return nil
}

// human writes whole days as days ("365 days"), the rest as Go does.
func human(d time.Duration) string {
	if d >= day && d%day == 0 {
		return plural(int(d/day), "day")
	}
	return d.String()
}

// UnsafeRune reports runes that must not reach a terminal or a log as they
// are: C0 and C1 controls (escape sequences, NUL, CR), bidirectional
// overrides that reorder what the admin reads, line separators, and the
// replacement rune of invalid UTF-8. meshd admin escapes what it prints
// by the same rule.
func UnsafeRune(r rune) bool {
	return unicode.IsControl(r) || unicode.Is(unicode.Bidi_Control, r) || r == '\u2028' || r == '\u2029' ||
		r == utf8.RuneError
}

// checkText validates text an admin gives (a name, a description): at most
// max bytes of UTF-8 with no control characters.
func checkText(what, s string, max int) (string, error) {
	s = strings.TrimSpace(s)
	if len(s) > max {
		return "", invalidf("%s is %d bytes long: at most %d", what, len(s), max)
	}
	if !utf8.ValidString(s) {
		return "", invalidf("%s is not valid UTF-8", what)
	}
	if i := strings.IndexFunc(s, UnsafeRune); i >= 0 {
		r, _ := utf8.DecodeRuneInString(s[i:])
		return "", invalidf("%s %q: no control characters or bidirectional overrides (found %U)", what, s, r)
	}
	return s, nil
}

// checkName validates the name of a group, policy, setup key, token or
// nameserver group.
func checkName(kind, name string) (string, error) {
	name, err := checkText(kind+" name", name, maxNameLen)
	switch {
	case err != nil:
		return "", err
	case name == "":
		return "", invalidf("%s name is empty", kind)
	case strings.Contains(name, ","):
		return "", invalidf("%s name %q: no commas (lists of names are comma-separated)", kind, name)
	}
	return name, nil
}

// cleanAgentText makes a string an agent sent safe to store and show: it
// drops control characters, bidirectional overrides and invalid UTF-8.
// The agent is not trusted to send printable text.
func cleanAgentText(s string) string {
	s = strings.ToValidUTF8(s, "")
	return strings.TrimSpace(strings.Map(func(r rune) rune {
		if UnsafeRune(r) {
			return -1
		}
		return r
	}, s))
}

// checkMeta bounds what an agent says about itself and cleans it; nil
// stays nil (nothing to update).
func checkMeta(m *controlv1.PeerMeta) (*controlv1.PeerMeta, error) {
	if m == nil {
		return nil, nil
	}
	for _, f := range []struct {
		what string
		v    string
		max  int
	}{{"hostname", m.Hostname, maxHostnameLen}, {"os", m.Os, maxOSLen}, {"version", m.Version, maxVersion}} {
		if len(f.v) > f.max {
			return nil, connect.NewError(connect.CodeInvalidArgument,
				fmt.Errorf("peer %s is %d bytes long: at most %d (set a shorter hostname with meshd agent --hostname)", f.what, len(f.v), f.max))
		}
	}
	return &controlv1.PeerMeta{Hostname: cleanAgentText(m.Hostname), Os: cleanAgentText(m.Os),
		Version: cleanAgentText(m.Version), PostQuantum: m.PostQuantum}, nil
}

// Networks that can never be an overlay: traffic to them never reaches a
// tunnel (loopback, multicast, "this network", class E) or is in use on
// every machine already (link-local: DHCP-less links, cloud metadata).
var reservedNets = []struct {
	p   netip.Prefix
	why string
}{
	{netip.MustParsePrefix("0.0.0.0/8"), `"this network" (0.0.0.0/8) is not routable`},
	{netip.MustParsePrefix("127.0.0.0/8"), "loopback (127.0.0.0/8) never leaves a machine"},
	{netip.MustParsePrefix("169.254.0.0/16"), "link-local (169.254.0.0/16) is used on every machine's own links (and cloud metadata)"},
	{netip.MustParsePrefix("224.0.0.0/4"), "multicast (224.0.0.0/4) cannot address peers"},
	{netip.MustParsePrefix("240.0.0.0/4"), "reserved (240.0.0.0/4) and broadcast addresses are not usable"},
}

// checkOverlay validates an overlay network for this account: IPv4, a
// size that fits a mesh, no reserved range, no route's network and none of
// control's own addresses (agents would send control's traffic into the
// tunnel).
func (a *account) checkOverlay(s string) (netip.Prefix, error) {
	p, err := checkCIDR("overlay network", s)
	if err != nil {
		return p, err
	}
	for _, r := range reservedNets {
		if p.Bits() > 0 && p.Overlaps(r.p) {
			return p, invalidf("overlay network %s overlaps %s; use e.g. 100.64.0.0/16", p, r.why)
		}
	}
	if !p.Addr().Is4() || p.Bits() < minOverlayBits || p.Bits() > maxOverlayBits {
		return p, invalidf("overlay network %s: want an IPv4 network from /%d to /%d, e.g. 100.64.0.0/16", p, minOverlayBits, maxOverlayBits)
	}
	for _, r := range sorted(a.routes, func(r *store.Route) (time.Time, string) { return r.Created, r.ID }) {
		if rp, err := netip.ParsePrefix(r.Network); err == nil && rp.Overlaps(p) {
			return p, conflictf("overlay network %s overlaps the network %s of a route: peers could not reach it; choose another overlay", p, rp)
		}
	}
	for _, own := range a.s.ownAddrs() {
		if p.Contains(own.addr) {
			return p, invalidf("overlay network %s contains %s, the address of %s: agents would send its traffic into the tunnel", p, own.addr, own.what)
		}
	}
	return p, nil
}

type ownAddr struct {
	addr netip.Addr
	what string
}

// ownAddrs are the addresses control knows machines reach the servers at:
// the IP literals of its public URL, signal and relay URLs.
func (s *Service) ownAddrs() []ownAddr {
	var out []ownAddr
	add := func(what, u string) {
		host := u
		if pu, err := url.Parse(u); err == nil && pu.Host != "" {
			host = pu.Hostname()
		} else if _, rest, ok := strings.Cut(u, ":"); ok { // stun:host:port?transport=udp
			host, _, _ = strings.Cut(rest, "?")
			if h, _, err := net.SplitHostPort(host); err == nil {
				host = h
			}
		}
		if ip, err := netip.ParseAddr(strings.Trim(host, "[]")); err == nil {
			out = append(out, ownAddr{ip.Unmap(), what})
		}
	}
	add("control", s.opts.PublicURL)
	add("signal", s.opts.SignalURL)
	for _, u := range s.opts.Relays.URLs {
		add("relay "+u, u)
	}
	return out
}

// Domains that must not be the mesh domain, with why: systemd-resolved
// routes the mesh domain to meshd, so a public or special-use name takes
// it away from the rest of the machine.
var reservedDomains = map[string]string{
	"localhost":    "names under localhost must resolve to loopback (RFC 6761)",
	"local":        "local is multicast DNS (RFC 6762)",
	"arpa":         "arpa holds reverse lookups and infrastructure names",
	"in-addr.arpa": "in-addr.arpa holds IPv4 reverse lookups",
	"ip6.arpa":     "ip6.arpa holds IPv6 reverse lookups",
	"invalid":      "invalid never resolves (RFC 6761)",
	"onion":        "onion names are Tor's (RFC 7686)",
}

// checkMeshDomain validates the account's DNS domain: a DNS name of at
// least two labels that is not a public suffix (com, co.uk) nor under a
// special-use domain.
func checkMeshDomain(s string) (string, error) {
	d, err := checkDomain("dns domain", s)
	if err != nil {
		return "", err
	}
	if strings.ContainsAny(d, "*_") {
		return "", invalidf("dns domain %q: wildcards and underscores are not allowed", d)
	}
	for sfx, why := range reservedDomains {
		if d == sfx || (sfx != "arpa" && strings.HasSuffix(d, "."+sfx)) {
			return "", invalidf("dns domain %q: %s; use e.g. meshd.internal", d, why)
		}
	}
	if !strings.Contains(d, ".") {
		return "", invalidf("dns domain %q: want at least two labels (e.g. meshd.internal): a single label is a top-level domain and every name under it would resolve through meshd", d)
	}
	if ps, _ := publicsuffix.PublicSuffix(d); ps == d {
		return "", invalidf("dns domain %q is a public suffix: every name under it would resolve through meshd; use e.g. meshd.internal", d)
	}
	return d, nil
}
