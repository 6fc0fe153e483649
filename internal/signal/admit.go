package signal

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"connectrpc.com/connect"

	"meshd/internal/keys"
	"meshd/internal/seal"
)

// Registration is the one thing a stranger can ask of signal, so it is
// where signal defends itself: each source address has a budget of
// registration attempts (a token bucket), and a key registers only with a
// ticket from control (see internal/seal: tickets), checked before the key
// proof so that a flood of throwaway keys costs signal a signature check
// each and reaches no peer.
//
// Tickets rather than asking control about each key: signal stays a
// process that needs nothing but control's public key (no call to control
// per registration, no shared database, nothing to fail when control is
// down or restarting), and `meshd all` and a separate `meshd signal` work
// the same way. The price is that a deleted peer's ticket stays valid until
// it expires; it is checked when a stream registers, and a registered
// stream keeps its account until it ends.

// Defaults of the registration limits.
const (
	DefaultRegisterRate  = 20  // attempts a second per source
	DefaultRegisterBurst = 200 // an office behind one address reconnecting at once
	// maxSources bounds the table of source buckets; past it, buckets that
	// refilled are dropped first, then sources share one bucket.
	maxSources = 1 << 16
)

// sources keeps one registration bucket per source address: an IPv4
// address, or an IPv6 /64 (one host's share of addresses).
type sources struct {
	rate  float64
	burst int

	mu      sync.Mutex
	buckets map[netip.Prefix]*bucket
	crowded bucket // shared once the table is full of sources still draining
	next    time.Time
}

func newSources(rate float64, burst int) *sources {
	return &sources{rate: rate, burst: burst, buckets: make(map[netip.Prefix]*bucket)}
}

// sourceOf is the prefix a registration is counted against.
func sourceOf(addr string) netip.Prefix {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Prefix{} // unknown: all such share one bucket
	}
	ip = ip.Unmap()
	bits := 32
	if ip.Is6() {
		bits = 64
	}
	p, _ := ip.Prefix(bits)
	return p
}

// take takes one registration attempt from addr's budget.
func (s *sources) take(addr string, now time.Time) (bool, time.Duration) {
	src := sourceOf(addr)
	s.mu.Lock()
	b := s.buckets[src]
	if b == nil {
		if len(s.buckets) >= maxSources && now.After(s.next) {
			for k, old := range s.buckets {
				if old.full(now, s.rate, s.burst) {
					delete(s.buckets, k)
				}
			}
			s.next = now.Add(time.Second)
		}
		if len(s.buckets) < maxSources {
			b = &bucket{tokens: float64(s.burst), last: now}
			s.buckets[src] = b
		} else {
			b = &s.crowded
		}
	}
	s.mu.Unlock()
	return b.take(now, s.rate, s.burst)
}

// admit checks the ticket a Hello carries for key, and returns the account
// the key may talk within ("" when signal runs without tickets).
func (s *Server) admit(ticket []byte, key keys.Key) (string, error) {
	if s.opts.TicketKey == nil {
		return "", nil
	}
	tk, err := seal.VerifyTicket(s.opts.TicketKey, ticket, key, s.opts.Now())
	if err != nil {
		s.stats.ticketRefused.Add(1)
		if errors.Is(err, seal.ErrTicketExpired) {
			s.refused.add(key, tk.Account, err.Error())
		}
		hint := "the agent gets a fresh ticket in every network map from control: is control reachable, and does this signal trust its key (--control-key)?"
		if errors.Is(err, seal.ErrNoTicket) {
			hint = "this key has no ticket from control: join through control first (meshd up), with agent and signal of the same version"
		}
		return "", connect.NewError(connect.CodePermissionDenied, fmt.Errorf("signal: registration refused: %w; %s", err, hint))
	}
	return tk.Account, nil
}

// ParseControlKey parses control's ticket key as `meshd control` prints it
// (base64, as --control-key takes it).
func ParseControlKey(s string) (ed25519.PublicKey, error) {
	k, err := keys.Parse(s) // 32 bytes of base64, like a WireGuard key
	if err != nil {
		return nil, fmt.Errorf("signal: control key: %w", err)
	}
	return ed25519.PublicKey(k[:]), nil
}

// maxRefusals bounds the memory of recent ticket refusals.
const maxRefusals = 4096

// refusals remembers, per key, why its last registration was refused when
// its ticket was control's but no longer valid (expired): a peer of the
// same account that sends to it is told why it is unreachable, instead of
// only that it is not connected. Tickets that do not verify name no
// account, and are not remembered. Bounded: the oldest entry goes first.
type refusals struct {
	mu    sync.Mutex
	m     map[keys.Key]refusal
	order []refusalAt // insertion order, for eviction
	gen   uint64
}

type refusal struct {
	account string
	why     string
	gen     uint64 // which entry of order is this one's
}

type refusalAt struct {
	key keys.Key
	gen uint64
}

func (r *refusals) add(key keys.Key, account, why string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.m == nil {
		r.m = make(map[keys.Key]refusal)
	}
	f, ok := r.m[key]
	if !ok {
		for len(r.order) >= maxRefusals {
			// An entry forgotten and added again has a newer place: an
			// old one evicts nothing.
			if old := r.order[0]; r.m[old.key].gen == old.gen {
				delete(r.m, old.key)
			}
			r.order = r.order[1:]
		}
		r.gen++
		f.gen = r.gen
		r.order = append(r.order, refusalAt{key, f.gen})
	}
	f.account, f.why = account, why
	r.m[key] = f
}

// forget drops key's refusal once it registers.
func (r *refusals) forget(key keys.Key) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.m, key) // its place in order goes when it comes round
}

// why returns the reason key was last refused, if the asker is of its
// account.
func (r *refusals) why(key keys.Key, account string) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if f, ok := r.m[key]; ok && f.account == account {
		return f.why
	}
	return ""
}
