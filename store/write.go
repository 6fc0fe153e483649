package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
)

// Tx is a write transaction of Write. Its methods write whole rows (insert
// or replace, with their lists) so callers keep one shape per change.
type Tx struct {
	ctx context.Context
	s   *Store
	tx  *sql.Tx
}

// Write runs fn in one write transaction, committing when fn returns nil:
// all of it is written or none.
func (s *Store) Write(ctx context.Context, fn func(*Tx) error) error {
	return s.tx(ctx, func(tx *sql.Tx) error { return fn(&Tx{ctx: ctx, s: s, tx: tx}) })
}

func (t *Tx) exec(what, query string, args ...any) error {
	if _, err := t.s.exec(t.ctx, t.tx, query, args...); err != nil {
		return fmt.Errorf("store: %s: %w", what, err)
	}
	return nil
}

// upsert inserts a row or updates every column of the row with the same id
// (the first column).
func (t *Tx) upsert(table string, cols []string, args ...any) error {
	set := make([]string, 0, len(cols)-1)
	for _, c := range cols[1:] {
		set = append(set, c+" = excluded."+c)
	}
	q := fmt.Sprintf("INSERT INTO %s (%s) VALUES (%s) ON CONFLICT(id) DO UPDATE SET %s",
		table, strings.Join(cols, ", "), strings.TrimSuffix(strings.Repeat("?, ", len(cols)), ", "), strings.Join(set, ", "))
	return t.exec("put "+table, q, args...)
}

// replaceList sets the rows of a join table that belong to owner, in order;
// with posCol set, each row also records its position there.
func (t *Tx) replaceList(table, ownerCol, valueCol, posCol, owner string, values []string) error {
	if err := t.exec("put "+table, fmt.Sprintf("DELETE FROM %s WHERE %s = ?", table, ownerCol), owner); err != nil {
		return err
	}
	for i, v := range values {
		q := fmt.Sprintf("INSERT INTO %s (%s, %s) VALUES (?, ?)", table, ownerCol, valueCol)
		args := []any{owner, v}
		if posCol != "" {
			q = fmt.Sprintf("INSERT INTO %s (%s, %s, %s) VALUES (?, ?, ?)", table, ownerCol, valueCol, posCol)
			args = append(args, i)
		}
		if err := t.exec("put "+table, q, args...); err != nil {
			return err
		}
	}
	return nil
}

// PutAccount writes an account (not its serial: see Store.TakeSerials).
func (t *Tx) PutAccount(a Account) error {
	q := `INSERT INTO accounts (id, name, overlay_network, dns_domain, login_expiration_seconds, ephemeral_offline_seconds, created, post_quantum)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET name = excluded.name,
		overlay_network = excluded.overlay_network, dns_domain = excluded.dns_domain,
		login_expiration_seconds = excluded.login_expiration_seconds,
		ephemeral_offline_seconds = excluded.ephemeral_offline_seconds,
		post_quantum = excluded.post_quantum`
	return t.exec("put account", q, a.ID, a.Name, a.OverlayNetwork, a.DNSDomain,
		int64(a.LoginExpiration.Seconds()), int64(a.EphemeralOffline.Seconds()), unixNano(a.Created), a.PostQuantum)
}

// SetBootstrapKey records that the account was bootstrapped with setup key
// keyID (not kept in PutAccount, which never unsets it).
func (t *Tx) SetBootstrapKey(accountID, keyID string) error {
	return t.exec("set bootstrap key", `UPDATE accounts SET bootstrap_key_id = ? WHERE id = ?`, keyID, accountID)
}

// PutAdminToken writes an admin token.
func (t *Tx) PutAdminToken(a AdminToken) error {
	return t.upsert("admin_tokens", []string{"id", "account_id", "name", "hash", "created", "last_used"},
		a.ID, a.AccountID, a.Name, a.Hash, unixNano(a.Created), unixNano(a.LastUsed))
}

// DeleteAdminToken deletes an admin token.
func (t *Tx) DeleteAdminToken(id string) error {
	return t.exec("delete admin token", `DELETE FROM admin_tokens WHERE id = ?`, id)
}

// PutGroup writes a group.
func (t *Tx) PutGroup(g Group) error {
	return t.upsert("groups", []string{"id", "account_id", "name", "is_all", "created"},
		g.ID, g.AccountID, g.Name, b2i(g.IsAll), unixNano(g.Created))
}

// DeleteGroup deletes a group; it fails while a policy, route or nameserver
// group uses it.
func (t *Tx) DeleteGroup(id string) error {
	return t.exec("delete group", `DELETE FROM groups WHERE id = ?`, id)
}

// PutSetupKey writes a setup key with its auto groups.
func (t *Tx) PutSetupKey(k SetupKey) error {
	if err := t.upsert("setup_keys", []string{"id", "account_id", "name", "hash", "prefix", "one_off", "expires",
		"usage_limit", "used", "revoked", "ephemeral", "last_used", "created"},
		k.ID, k.AccountID, k.Name, k.Hash, k.Prefix, b2i(k.OneOff), unixNano(k.Expires), k.UsageLimit, k.Used,
		b2i(k.Revoked), b2i(k.Ephemeral), unixNano(k.LastUsed), unixNano(k.Created)); err != nil {
		return err
	}
	return t.replaceList("setup_key_groups", "setup_key_id", "group_id", "", k.ID, k.AutoGroups)
}

// ErrStale is returned by a write that found the row changed since the
// caller read it (by another replica): the caller reloads and decides again.
var ErrStale = errors.New("store: changed by another replica meanwhile")

// UseSetupKey counts one use of the setup key k (at k.LastUsed) in the
// database itself, and only while the key has uses left there: two
// replicas that both saw a one-off key unused cannot both take it (ErrStale
// for the second), and a key revoked through another replica is not used
// through this one before the revocation reaches it. Uses of a key without
// a limit never conflict.
func (t *Tx) UseSetupKey(k SetupKey) error {
	r, err := t.s.exec(t.ctx, t.tx, `UPDATE setup_keys SET used = used + 1, last_used = ?
		WHERE id = ? AND revoked = 0 AND (one_off = 0 OR used < 1) AND (usage_limit = 0 OR used < usage_limit)`,
		unixNano(k.LastUsed), k.ID)
	if err != nil {
		return fmt.Errorf("store: use setup key: %w", err)
	}
	if n, err := r.RowsAffected(); err != nil {
		return fmt.Errorf("store: use setup key: %w", err)
	} else if n != 1 {
		return fmt.Errorf("store: use setup key %s: %w", k.Name, ErrStale)
	}
	return nil
}

// DeleteSetupKey deletes a setup key; peers that joined with it stay.
func (t *Tx) DeleteSetupKey(id string) error {
	return t.exec("delete setup key", `DELETE FROM setup_keys WHERE id = ?`, id)
}

// PutPeer writes a peer with its groups.
func (t *Tx) PutPeer(p Peer) error {
	var key any
	if p.SetupKeyID != "" {
		key = p.SetupKeyID
	}
	if err := t.upsert("peers", []string{"id", "account_id", "public_key", "name", "dns_label", "overlay_ip",
		"hostname", "os", "version", "setup_key_id", "ephemeral", "login_expiration_enabled", "last_login",
		"last_seen", "created", "post_quantum"},
		p.ID, p.AccountID, p.PublicKey, p.Name, p.DNSLabel, p.OverlayIP, p.Hostname, p.OS, p.Version, key,
		b2i(p.Ephemeral), b2i(p.LoginExpirationEnabled), unixNano(p.LastLogin), unixNano(p.LastSeen),
		unixNano(p.Created), b2i(p.PostQuantum)); err != nil {
		return err
	}
	return t.replaceList("group_peers", "peer_id", "group_id", "", p.ID, p.Groups)
}

// DeletePeer deletes a peer, its group memberships and its place in routes.
func (t *Tx) DeletePeer(id string) error {
	return t.exec("delete peer", `DELETE FROM peers WHERE id = ?`, id)
}

// PutPolicy writes a policy with its groups.
func (t *Tx) PutPolicy(p Policy) error {
	if err := t.upsert("policies", []string{"id", "account_id", "name", "description", "enabled", "protocol",
		"ports", "bidirectional", "action", "created"},
		p.ID, p.AccountID, p.Name, p.Description, b2i(p.Enabled), p.Protocol, joinList(p.Ports),
		b2i(p.Bidirectional), p.Action, unixNano(p.Created)); err != nil {
		return err
	}
	if err := t.exec("put policy", `DELETE FROM policy_groups WHERE policy_id = ?`, p.ID); err != nil {
		return err
	}
	for side, groups := range map[string][]string{"src": p.Sources, "dst": p.Destinations} {
		for _, g := range groups {
			if err := t.exec("put policy", `INSERT INTO policy_groups (policy_id, group_id, side) VALUES (?, ?, ?)`,
				p.ID, g, side); err != nil {
				return err
			}
		}
	}
	return nil
}

// DeletePolicy deletes a policy.
func (t *Tx) DeletePolicy(id string) error {
	return t.exec("delete policy", `DELETE FROM policies WHERE id = ?`, id)
}

// PutRoute writes a route with its routing peers and groups.
func (t *Tx) PutRoute(r Route) error {
	if err := t.upsert("routes", []string{"id", "account_id", "network", "metric", "masquerade", "description",
		"enabled", "created"},
		r.ID, r.AccountID, r.Network, r.Metric, b2i(r.Masquerade), r.Description, b2i(r.Enabled),
		unixNano(r.Created)); err != nil {
		return err
	}
	if err := t.replaceList("route_peers", "route_id", "peer_id", "pos", r.ID, r.Peers); err != nil {
		return err
	}
	return t.replaceList("route_groups", "route_id", "group_id", "", r.ID, r.Groups)
}

// DeleteRoute deletes a route.
func (t *Tx) DeleteRoute(id string) error {
	return t.exec("delete route", `DELETE FROM routes WHERE id = ?`, id)
}

// PutNameserverGroup writes a nameserver group with its groups.
func (t *Tx) PutNameserverGroup(n NameserverGroup) error {
	if err := t.upsert("nameserver_groups", []string{"id", "account_id", "name", "nameservers", "match_domains",
		"enabled", "created"},
		n.ID, n.AccountID, n.Name, joinList(n.Nameservers), joinList(n.MatchDomains), b2i(n.Enabled),
		unixNano(n.Created)); err != nil {
		return err
	}
	return t.replaceList("nameserver_group_groups", "nameserver_group_id", "group_id", "", n.ID, n.Groups)
}

// DeleteNameserverGroup deletes a nameserver group.
func (t *Tx) DeleteNameserverGroup(id string) error {
	return t.exec("delete nameserver group", `DELETE FROM nameserver_groups WHERE id = ?`, id)
}

// PutDNSRecord writes a custom DNS record.
func (t *Tx) PutDNSRecord(r DNSRecord) error {
	return t.upsert("dns_records", []string{"id", "account_id", "name", "type", "value", "ttl", "created"},
		r.ID, r.AccountID, r.Name, r.Type, r.Value, r.TTL, unixNano(r.Created))
}

// DeleteDNSRecord deletes a custom DNS record.
func (t *Tx) DeleteDNSRecord(id string) error {
	return t.exec("delete dns record", `DELETE FROM dns_records WHERE id = ?`, id)
}

// AddEvent appends to the audit log.
func (t *Tx) AddEvent(e Event) error {
	return t.exec("add event", `INSERT INTO events (account_id, time, actor, action, target_type, target_id, target_name, detail)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
		e.AccountID, unixNano(e.Time), e.Actor, e.Action, e.TargetType, e.TargetID, e.TargetName, e.Detail)
}

// PutSecret writes a secret, replacing one of the same name.
func (t *Tx) PutSecret(name string, value []byte) error {
	return t.exec("put secret", `INSERT INTO secrets (name, value) VALUES (?, ?)
		ON CONFLICT(name) DO UPDATE SET value = excluded.value`, name, value)
}
