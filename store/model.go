package store

import (
	"time"
)

// The rows control keeps. Slices of ids are kept in the order given; times
// are stored as Unix nanoseconds, zero meaning "never" or "none".

// Account is one network: its peers, groups, policies and settings.
type Account struct {
	ID             string
	Name           string
	OverlayNetwork string // e.g. "100.64.0.0/16"
	DNSDomain      string // e.g. "meshd.internal"
	// Zero: logins do not expire.
	LoginExpiration time.Duration
	// How long an ephemeral peer may stay offline before it is removed.
	EphemeralOffline time.Duration
	Created          time.Time
	// Serial is the network-map serial high-water mark.
	Serial uint64
	// Bootstrapped is true once a first start made the bootstrap setup key
	// (BootstrapKeyID, empty when unknown); later starts never make another.
	Bootstrapped   bool
	BootstrapKeyID string
	// PostQuantum is the mode of post-quantum pre-shared keys between
	// peers: "off" (or empty), "permissive" or "strict".
	PostQuantum string
}

// AdminToken authenticates calls to the admin API. Only its SHA-256 is kept.
type AdminToken struct {
	ID        string
	AccountID string
	Name      string
	Hash      []byte
	Created   time.Time
	LastUsed  time.Time
}

// Group is a named set of peers. The All group (IsAll) has every peer of the
// account implicitly; its membership is not stored.
type Group struct {
	ID        string
	AccountID string
	Name      string
	IsAll     bool
	Created   time.Time
}

// SetupKey lets a machine join. Only its SHA-256 and a prefix are kept.
type SetupKey struct {
	ID         string
	AccountID  string
	Name       string
	Hash       []byte
	Prefix     string
	OneOff     bool
	Expires    time.Time // zero: never
	UsageLimit int       // zero: unlimited
	Used       int
	Revoked    bool
	Ephemeral  bool
	LastUsed   time.Time
	Created    time.Time
	AutoGroups []string // group ids
}

// Peer is a machine in the network.
type Peer struct {
	ID                     string
	AccountID              string
	PublicKey              string // base64
	Name                   string
	DNSLabel               string
	OverlayIP              string
	Hostname               string
	OS                     string
	Version                string
	PostQuantum            bool   // the agent supports post-quantum pre-shared keys
	SetupKeyID             string // empty when the key was deleted
	Ephemeral              bool
	LoginExpirationEnabled bool
	LastLogin              time.Time
	LastSeen               time.Time
	Created                time.Time
	Groups                 []string // group ids, without All
}

// Policy lets the peers of source groups reach those of destination groups.
type Policy struct {
	ID            string
	AccountID     string
	Name          string
	Description   string
	Enabled       bool
	Protocol      string   // all, tcp, udp, icmp
	Ports         []string // "443", "8000-8100"
	Bidirectional bool
	Action        string // accept
	Created       time.Time
	Sources       []string // group ids
	Destinations  []string // group ids
}

// Route sends a network through one of its routing peers.
type Route struct {
	ID          string
	AccountID   string
	Network     string // CIDR
	Metric      int
	Masquerade  bool
	Description string
	Enabled     bool
	Created     time.Time
	Peers       []string // routing peer ids, in order of preference
	Groups      []string // group ids receiving it; none: every peer
}

// NameserverGroup is a set of resolvers for some domains (or all).
type NameserverGroup struct {
	ID           string
	AccountID    string
	Name         string
	Nameservers  []string
	MatchDomains []string
	Enabled      bool
	Created      time.Time
	Groups       []string // group ids using it; none: every peer
}

// DNSRecord is a custom record in the account's zone.
type DNSRecord struct {
	ID        string
	AccountID string
	Name      string
	Type      string
	Value     string
	TTL       uint32
	Created   time.Time
}

// Event is one entry of the audit log.
type Event struct {
	ID         int64
	AccountID  string
	Time       time.Time
	Actor      string
	Action     string
	TargetType string
	TargetID   string
	TargetName string
	Detail     string
}

// AccountData is everything of one account that control keeps in memory.
type AccountData struct {
	Account          Account
	Groups           []Group
	SetupKeys        []SetupKey
	Peers            []Peer
	Policies         []Policy
	Routes           []Route
	NameserverGroups []NameserverGroup
	DNSRecords       []DNSRecord
}

func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func fromUnixNano(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n)
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}
