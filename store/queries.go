package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"
)

// ErrNotFound means no row has the key asked for.
var ErrNotFound = errors.New("store: not found")

// Accounts returns every account, oldest first.
func (s *Store) Accounts(ctx context.Context) ([]Account, error) {
	rows, err := s.query(ctx, s.db, `SELECT id, name, overlay_network, dns_domain,
		login_expiration_seconds, ephemeral_offline_seconds, created, serial, bootstrap_key_id, post_quantum
		FROM accounts ORDER BY created, id`)
	if err != nil {
		return nil, fmt.Errorf("store: accounts: %w", err)
	}
	defer rows.Close()
	var out []Account
	for rows.Next() {
		var a Account
		var exp, eph, created int64
		var boot sql.NullString
		if err := rows.Scan(&a.ID, &a.Name, &a.OverlayNetwork, &a.DNSDomain, &exp, &eph, &created, &a.Serial, &boot, &a.PostQuantum); err != nil {
			return nil, fmt.Errorf("store: accounts: %w", err)
		}
		a.LoginExpiration = time.Duration(exp) * time.Second
		a.EphemeralOffline = time.Duration(eph) * time.Second
		a.Created = fromUnixNano(created)
		a.Bootstrapped, a.BootstrapKeyID = boot.Valid, boot.String
		out = append(out, a)
	}
	return out, classify(rows.Err())
}

// LoadAccount reads everything of account id.
func (s *Store) LoadAccount(ctx context.Context, id string) (*AccountData, error) {
	accts, err := s.Accounts(ctx)
	if err != nil {
		return nil, err
	}
	d := &AccountData{}
	found := false
	for _, a := range accts {
		if a.ID == id {
			d.Account, found = a, true
		}
	}
	if !found {
		return nil, fmt.Errorf("store: account %s: %w", id, ErrNotFound)
	}
	l := loader{ctx: ctx, s: s, account: id}
	l.groups(d)
	l.setupKeys(d)
	l.peers(d)
	l.policies(d)
	l.routes(d)
	l.nameserverGroups(d)
	l.dnsRecords(d)
	if l.err != nil {
		return nil, fmt.Errorf("store: load account %s: %w", id, l.err)
	}
	return d, nil
}

// loader reads one account's tables, keeping the first error.
type loader struct {
	ctx     context.Context
	s       *Store
	account string
	err     error
}

// each runs query (with the account id as its only argument) and calls scan
// for every row.
func (l *loader) each(query string, scan func(*sql.Rows) error) {
	if l.err != nil {
		return
	}
	rows, err := l.s.query(l.ctx, l.s.db, query, l.account)
	if err != nil {
		l.err = err
		return
	}
	defer rows.Close()
	for rows.Next() {
		if err := scan(rows); err != nil {
			l.err = err
			return
		}
	}
	l.err = classify(rows.Err())
}

// pairs reads (owner id, value) rows into a map of lists. The queries
// order join tables by rowid: insertion order, on PostgreSQL too
// (orderedTables), so lists come back in the order they were given.
func (l *loader) pairs(query string) map[string][]string {
	m := map[string][]string{}
	l.each(query, func(r *sql.Rows) error {
		var k, v string
		if err := r.Scan(&k, &v); err != nil {
			return err
		}
		m[k] = append(m[k], v)
		return nil
	})
	return m
}

func (l *loader) groups(d *AccountData) {
	l.each(`SELECT id, name, is_all, created FROM groups WHERE account_id = ? ORDER BY created, id`, func(r *sql.Rows) error {
		g := Group{AccountID: l.account}
		var created int64
		if err := r.Scan(&g.ID, &g.Name, &g.IsAll, &created); err != nil {
			return err
		}
		g.Created = fromUnixNano(created)
		d.Groups = append(d.Groups, g)
		return nil
	})
}

func (l *loader) setupKeys(d *AccountData) {
	groups := l.pairs(`SELECT kg.setup_key_id, kg.group_id FROM setup_key_groups kg
		JOIN setup_keys k ON k.id = kg.setup_key_id WHERE k.account_id = ? ORDER BY kg.rowid`)
	l.each(`SELECT id, name, hash, prefix, one_off, expires, usage_limit, used, revoked, ephemeral, last_used, created
		FROM setup_keys WHERE account_id = ? ORDER BY created, id`, func(r *sql.Rows) error {
		k := SetupKey{AccountID: l.account}
		var expires, lastUsed, created int64
		if err := r.Scan(&k.ID, &k.Name, &k.Hash, &k.Prefix, &k.OneOff, &expires, &k.UsageLimit, &k.Used,
			&k.Revoked, &k.Ephemeral, &lastUsed, &created); err != nil {
			return err
		}
		k.Expires, k.LastUsed, k.Created = fromUnixNano(expires), fromUnixNano(lastUsed), fromUnixNano(created)
		k.AutoGroups = groups[k.ID]
		d.SetupKeys = append(d.SetupKeys, k)
		return nil
	})
}

func (l *loader) peers(d *AccountData) {
	groups := l.pairs(`SELECT gp.peer_id, gp.group_id FROM group_peers gp
		JOIN peers p ON p.id = gp.peer_id WHERE p.account_id = ? ORDER BY gp.rowid`)
	l.each(`SELECT id, public_key, name, dns_label, overlay_ip, hostname, os, version, COALESCE(setup_key_id, ''),
		ephemeral, login_expiration_enabled, last_login, last_seen, created, post_quantum
		FROM peers WHERE account_id = ? ORDER BY created, id`, func(r *sql.Rows) error {
		p := Peer{AccountID: l.account}
		var lastLogin, lastSeen, created int64
		if err := r.Scan(&p.ID, &p.PublicKey, &p.Name, &p.DNSLabel, &p.OverlayIP, &p.Hostname, &p.OS, &p.Version,
			&p.SetupKeyID, &p.Ephemeral, &p.LoginExpirationEnabled, &lastLogin, &lastSeen, &created, &p.PostQuantum); err != nil {
			return err
		}
		p.LastLogin, p.LastSeen, p.Created = fromUnixNano(lastLogin), fromUnixNano(lastSeen), fromUnixNano(created)
		p.Groups = groups[p.ID]
		d.Peers = append(d.Peers, p)
		return nil
	})
}

func (l *loader) policies(d *AccountData) {
	src := l.pairs(`SELECT pg.policy_id, pg.group_id FROM policy_groups pg
		JOIN policies p ON p.id = pg.policy_id WHERE p.account_id = ? AND pg.side = 'src' ORDER BY pg.rowid`)
	dst := l.pairs(`SELECT pg.policy_id, pg.group_id FROM policy_groups pg
		JOIN policies p ON p.id = pg.policy_id WHERE p.account_id = ? AND pg.side = 'dst' ORDER BY pg.rowid`)
	l.each(`SELECT id, name, description, enabled, protocol, ports, bidirectional, action, created
		FROM policies WHERE account_id = ? ORDER BY created, id`, func(r *sql.Rows) error {
		p := Policy{AccountID: l.account}
		var ports string
		var created int64
		if err := r.Scan(&p.ID, &p.Name, &p.Description, &p.Enabled, &p.Protocol, &ports, &p.Bidirectional, &p.Action, &created); err != nil {
			return err
		}
		p.Ports, p.Created = splitList(ports), fromUnixNano(created)
		p.Sources, p.Destinations = src[p.ID], dst[p.ID]
		d.Policies = append(d.Policies, p)
		return nil
	})
}

func (l *loader) routes(d *AccountData) {
	peers := l.pairs(`SELECT rp.route_id, rp.peer_id FROM route_peers rp
		JOIN routes r ON r.id = rp.route_id WHERE r.account_id = ? ORDER BY rp.route_id, rp.pos`)
	groups := l.pairs(`SELECT rg.route_id, rg.group_id FROM route_groups rg
		JOIN routes r ON r.id = rg.route_id WHERE r.account_id = ? ORDER BY rg.rowid`)
	l.each(`SELECT id, network, metric, masquerade, description, enabled, created
		FROM routes WHERE account_id = ? ORDER BY created, id`, func(r *sql.Rows) error {
		rt := Route{AccountID: l.account}
		var created int64
		if err := r.Scan(&rt.ID, &rt.Network, &rt.Metric, &rt.Masquerade, &rt.Description, &rt.Enabled, &created); err != nil {
			return err
		}
		rt.Created = fromUnixNano(created)
		rt.Peers, rt.Groups = peers[rt.ID], groups[rt.ID]
		d.Routes = append(d.Routes, rt)
		return nil
	})
}

func (l *loader) nameserverGroups(d *AccountData) {
	groups := l.pairs(`SELECT ng.nameserver_group_id, ng.group_id FROM nameserver_group_groups ng
		JOIN nameserver_groups n ON n.id = ng.nameserver_group_id WHERE n.account_id = ? ORDER BY ng.rowid`)
	l.each(`SELECT id, name, nameservers, match_domains, enabled, created
		FROM nameserver_groups WHERE account_id = ? ORDER BY created, id`, func(r *sql.Rows) error {
		n := NameserverGroup{AccountID: l.account}
		var ns, md string
		var created int64
		if err := r.Scan(&n.ID, &n.Name, &ns, &md, &n.Enabled, &created); err != nil {
			return err
		}
		n.Nameservers, n.MatchDomains, n.Created = splitList(ns), splitList(md), fromUnixNano(created)
		n.Groups = groups[n.ID]
		d.NameserverGroups = append(d.NameserverGroups, n)
		return nil
	})
}

func (l *loader) dnsRecords(d *AccountData) {
	l.each(`SELECT id, name, type, value, ttl, created FROM dns_records WHERE account_id = ? ORDER BY created, id`, func(r *sql.Rows) error {
		rec := DNSRecord{AccountID: l.account}
		var created int64
		if err := r.Scan(&rec.ID, &rec.Name, &rec.Type, &rec.Value, &rec.TTL, &created); err != nil {
			return err
		}
		rec.Created = fromUnixNano(created)
		d.DNSRecords = append(d.DNSRecords, rec)
		return nil
	})
}

// AdminTokens returns every admin token of every account.
func (s *Store) AdminTokens(ctx context.Context) ([]AdminToken, error) {
	rows, err := s.query(ctx, s.db, `SELECT id, account_id, name, hash, created, COALESCE(last_used, 0)
		FROM admin_tokens ORDER BY created, id`)
	if err != nil {
		return nil, fmt.Errorf("store: admin tokens: %w", err)
	}
	defer rows.Close()
	var out []AdminToken
	for rows.Next() {
		var t AdminToken
		var created, lastUsed int64
		if err := rows.Scan(&t.ID, &t.AccountID, &t.Name, &t.Hash, &created, &lastUsed); err != nil {
			return nil, fmt.Errorf("store: admin tokens: %w", err)
		}
		t.Created, t.LastUsed = fromUnixNano(created), fromUnixNano(lastUsed)
		out = append(out, t)
	}
	return out, classify(rows.Err())
}

// TouchAdminToken records when a token was last used. The record may be
// lost in a power cut (see Store.lazy).
func (s *Store) TouchAdminToken(ctx context.Context, id string, at time.Time) error {
	_, err := s.exec(ctx, s.lazy, `UPDATE admin_tokens SET last_used = ? WHERE id = ?`, unixNano(at), id)
	if err != nil {
		return fmt.Errorf("store: touch admin token: %w", err)
	}
	return nil
}

// Events returns the newest limit events of an account, newest first.
func (s *Store) Events(ctx context.Context, accountID string, limit int) ([]Event, error) {
	rows, err := s.query(ctx, s.db, `SELECT id, time, actor, action, target_type, target_id, target_name, detail
		FROM events WHERE account_id = ? ORDER BY id DESC LIMIT ?`, accountID, limit)
	if err != nil {
		return nil, fmt.Errorf("store: events: %w", err)
	}
	defer rows.Close()
	var out []Event
	for rows.Next() {
		e := Event{AccountID: accountID}
		var at int64
		if err := rows.Scan(&e.ID, &at, &e.Actor, &e.Action, &e.TargetType, &e.TargetID, &e.TargetName, &e.Detail); err != nil {
			return nil, fmt.Errorf("store: events: %w", err)
		}
		e.Time = fromUnixNano(at)
		out = append(out, e)
	}
	return out, classify(rows.Err())
}

// Secret returns the secret called name, or ErrNotFound.
func (s *Store) Secret(ctx context.Context, name string) ([]byte, error) {
	var v []byte
	err := s.queryRow(ctx, s.db, `SELECT value FROM secrets WHERE name = ?`, []any{name}, &v)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("store: secret %s: %w", name, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("store: secret %s: %w", name, err)
	}
	return v, nil
}

// SecretOrCreate returns the secret called name, creating it with gen the
// first time. Concurrent callers all get the same value.
func (s *Store) SecretOrCreate(ctx context.Context, name string, gen func() ([]byte, error)) ([]byte, error) {
	if v, err := s.Secret(ctx, name); err == nil || !errors.Is(err, ErrNotFound) {
		return v, err
	}
	v, err := gen()
	if err != nil {
		return nil, fmt.Errorf("store: secret %s: %w", name, err)
	}
	if _, err := s.exec(ctx, s.db, `INSERT INTO secrets (name, value) VALUES (?, ?) ON CONFLICT(name) DO NOTHING`, name, v); err != nil {
		return nil, fmt.Errorf("store: secret %s: %w", name, err)
	}
	return s.Secret(ctx, name)
}

// TakeSerials takes n serials of the account's map counter at once and
// returns the first: the n serials first..first+n-1 are above every serial
// any process handed out before, so serials grow across replicas that
// share the database.
func (s *Store) TakeSerials(ctx context.Context, accountID string, n int) (uint64, error) {
	if n < 1 {
		return 0, fmt.Errorf("store: take serials: n=%d, want at least 1", n)
	}
	var last uint64
	err := s.queryRow(ctx, s.db, `UPDATE accounts SET serial = serial + ? WHERE id = ? RETURNING serial`, []any{n, accountID}, &last)
	if err != nil {
		return 0, fmt.Errorf("store: take serials: %w", err)
	}
	return last - uint64(n) + 1, nil
}

// SetPeerLastSeen records when a peer was last connected. The record may
// be lost in a power cut (see Store.lazy).
func (s *Store) SetPeerLastSeen(ctx context.Context, peerID string, at time.Time) error {
	_, err := s.exec(ctx, s.lazy, `UPDATE peers SET last_seen = ? WHERE id = ?`, unixNano(at), peerID)
	if err != nil {
		return fmt.Errorf("store: peer last seen: %w", err)
	}
	return nil
}

func splitList(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}

func joinList(l []string) string { return strings.Join(l, ",") }
