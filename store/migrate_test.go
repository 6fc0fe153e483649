package store

import (
	"context"
	"slices"
	"testing"
)

// seeds insert rows in the schema of each version, as a meshd of that
// version wrote them. seeds[v] runs on a database at version v.
var seeds = map[int][]seed{
	1: {
		{`INSERT INTO accounts (id, name, overlay_network, dns_domain, login_expiration_seconds, ephemeral_offline_seconds, created)
		 VALUES ('acct1', 'home', '100.64.0.0/16', 'meshd.internal', 3600, 600, 1000)`, nil},
		{`INSERT INTO admin_tokens (id, account_id, name, hash, created) VALUES ('tok1', 'acct1', 'bootstrap', ?, 1000)`, []any{[]byte{0x00, 0x11, 0x22, 0x33}}},
		{`INSERT INTO secrets (name, value) VALUES ('control_key', ?)`, []any{[]byte{0xaa, 0xbb}}},
	},
	2: {
		{`INSERT INTO groups (id, account_id, name, created) VALUES ('g-eng', 'acct1', 'eng', 2000)`, nil},
		{`INSERT INTO setup_keys (id, account_id, name, hash, prefix, one_off, created) VALUES ('k1', 'acct1', 'laptops', ?, 'ABCD', 1, 2000)`, []any{[]byte{0x01}}},
		{`INSERT INTO setup_key_groups (setup_key_id, group_id) VALUES ('k1', 'g-eng')`, nil},
		{`INSERT INTO peers (id, account_id, public_key, name, dns_label, overlay_ip, setup_key_id, last_login, created)
		 VALUES ('p1', 'acct1', 'PUBKEY1', 'laptop', 'laptop', '100.64.0.1', 'k1', 2000, 2000)`, nil},
		{`INSERT INTO group_peers (group_id, peer_id) VALUES ('g-eng', 'p1')`, nil},
	},
	3: {
		{`INSERT INTO policies (id, account_id, name, protocol, ports, created) VALUES ('pol1', 'acct1', 'web', 'tcp', '443,8000-8100', 3000)`, nil},
		{`INSERT INTO policy_groups (policy_id, group_id, side) VALUES ('pol1', 'g-eng', 'src'), ('pol1', 'g-eng', 'dst')`, nil},
		{`INSERT INTO routes (id, account_id, network, created) VALUES ('r1', 'acct1', '192.168.1.0/24', 3000)`, nil},
		{`INSERT INTO route_peers (route_id, peer_id, pos) VALUES ('r1', 'p1', 0)`, nil},
		{`INSERT INTO nameserver_groups (id, account_id, name, nameservers, match_domains, created)
		 VALUES ('ns1', 'acct1', 'corp', '10.0.0.53,10.0.0.54', 'corp.example', 3000)`, nil},
		{`INSERT INTO dns_records (id, account_id, name, type, value, created) VALUES ('d1', 'acct1', 'nas', 'A', '100.64.0.1', 3000)`, nil},
	},
	4: {
		{`INSERT INTO events (account_id, time, actor, action) VALUES ('acct1', 4000, 'bootstrap', 'peer.added')`, nil},
		{`UPDATE accounts SET serial = 42`, nil},
		{`INSERT INTO setup_keys (id, account_id, name, hash, prefix, created) VALUES ('kb-old', 'acct1', 'bootstrap', ?, 'EFGH', 4000)`, []any{[]byte{0x02}}},
		{`INSERT INTO setup_keys (id, account_id, name, hash, prefix, created) VALUES ('kb', 'acct1', 'bootstrap', ?, 'IJKL', 4001)`, []any{[]byte{0x03}}},
	},
	5: {
		{`INSERT INTO accounts (id, name, overlay_network, dns_domain, created) VALUES ('acct5', 'new', '100.64.0.0/16', 'meshd.internal', 5000)`, nil},
	},
	6: {
		{`INSERT INTO peers (id, account_id, public_key, name, dns_label, overlay_ip, login_expiration_enabled, last_login, created)
		 VALUES ('p6', 'acct1', 'PUBKEY6', 'person', 'person', '100.64.0.6', 1, 6000, 6000)`, nil},
	},
}

// checks verify, on the latest schema, what the seeds of version v left.
var checks = map[int]func(t *testing.T, s *Store, d *AccountData){
	1: func(t *testing.T, s *Store, d *AccountData) {
		if d.Account.Name != "home" || d.Account.LoginExpiration.Seconds() != 3600 {
			t.Errorf("account = %+v", d.Account)
		}
		toks, err := s.AdminTokens(context.Background())
		if err != nil || len(toks) != 1 || toks[0].Name != "bootstrap" {
			t.Errorf("admin tokens = %+v, %v", toks, err)
		}
		// 0002 gives old accounts their All group, 0003 the default policy.
		var all *Group
		for i, g := range d.Groups {
			if g.IsAll {
				all = &d.Groups[i]
			}
		}
		if all == nil || all.Name != "All" {
			t.Fatalf("no All group after migration: %+v", d.Groups)
		}
		var def *Policy
		for i, p := range d.Policies {
			if p.Name == "Default" {
				def = &d.Policies[i]
			}
		}
		if def == nil || !def.Bidirectional || !slices.Equal(def.Sources, []string{all.ID}) || !slices.Equal(def.Destinations, []string{all.ID}) {
			t.Fatalf("default policy after migration = %+v", def)
		}
	},
	2: func(t *testing.T, s *Store, d *AccountData) {
		if len(d.Peers) < 1 || d.Peers[0].OverlayIP != "100.64.0.1" || !slices.Equal(d.Peers[0].Groups, []string{"g-eng"}) ||
			d.Peers[0].SetupKeyID != "k1" {
			t.Errorf("peers = %+v", d.Peers)
		}
		if len(d.SetupKeys) < 1 || d.SetupKeys[0].ID != "k1" || !d.SetupKeys[0].OneOff || !slices.Equal(d.SetupKeys[0].AutoGroups, []string{"g-eng"}) {
			t.Errorf("setup keys = %+v", d.SetupKeys)
		}
	},
	3: func(t *testing.T, s *Store, d *AccountData) {
		var web *Policy
		for i, p := range d.Policies {
			if p.ID == "pol1" {
				web = &d.Policies[i]
			}
		}
		if web == nil || !slices.Equal(web.Ports, []string{"443", "8000-8100"}) || !slices.Equal(web.Sources, []string{"g-eng"}) {
			t.Errorf("policy = %+v", web)
		}
		if len(d.Routes) != 1 || !slices.Equal(d.Routes[0].Peers, []string{"p1"}) || d.Routes[0].Metric != 9999 {
			t.Errorf("routes = %+v", d.Routes)
		}
		if len(d.NameserverGroups) != 1 || !slices.Equal(d.NameserverGroups[0].Nameservers, []string{"10.0.0.53", "10.0.0.54"}) {
			t.Errorf("nameserver groups = %+v", d.NameserverGroups)
		}
		if len(d.DNSRecords) != 1 || d.DNSRecords[0].TTL != 300 {
			t.Errorf("dns records = %+v", d.DNSRecords)
		}
	},
	4: func(t *testing.T, s *Store, d *AccountData) {
		ev, err := s.Events(context.Background(), "acct1", 10)
		if err != nil || len(ev) != 1 || ev[0].Action != "peer.added" {
			t.Errorf("events = %+v, %v", ev, err)
		}
		if d.Account.Serial != 42 {
			t.Errorf("serial = %d", d.Account.Serial)
		}
	},
	5: func(t *testing.T, s *Store, d *AccountData) {
		// An account from before 0005 counts as bootstrapped (a start made
		// it), so no start makes it a second bootstrap key; a new one does
		// not until a start records its key.
		if !d.Account.Bootstrapped || d.Account.BootstrapKeyID != "kb" {
			t.Errorf("old account not bootstrapped: %+v", d.Account)
		}
		n, err := s.LoadAccount(context.Background(), "acct5")
		if err != nil || n.Account.Bootstrapped {
			t.Errorf("account made at version 5 = %+v, %v", n, err)
		}
	},
	6: func(t *testing.T, s *Store, d *AccountData) {
		// Peers from before 0006 joined with setup keys: exempt from login
		// expiration; a peer opted in after 0006 stays opted in.
		for _, p := range d.Peers {
			if p.LoginExpirationEnabled != (p.ID == "p6") {
				t.Errorf("peer %s login expiration %v", p.ID, p.LoginExpirationEnabled)
			}
		}
	},
}

// seed is a statement of a seeds list with its arguments (BLOBs are
// arguments: literals differ between engines).
type seed struct {
	q    string
	args []any
}

// A database written at each earlier version, with rows, migrates to the
// latest schema and keeps its rows.
func TestMigrateWithRowsFromEveryVersion(t *testing.T) {
	ctx := context.Background()
	if len(seeds) != Latest() || len(checks) != Latest() {
		t.Fatalf("add seeds and checks for migration %d", Latest())
	}
	forEachBackend(t, func(t *testing.T, b backend) {
		for from := 1; from <= Latest(); from++ {
			target := b.newTarget(t)
			for v := 1; v <= from; v++ {
				s, err := OpenAt(ctx, target, v)
				if err != nil {
					t.Fatalf("from %d: build version %d: %v", from, v, err)
				}
				for _, q := range seeds[v] {
					if _, err := s.exec(ctx, s.db, q.q, q.args...); err != nil {
						t.Fatalf("from %d: seed version %d: %v\n%s", from, v, err, q.q)
					}
				}
				s.Close()
			}
			s, err := Open(ctx, target)
			if err != nil {
				t.Fatalf("migrate from %d: %v", from, err)
			}
			d, err := s.LoadAccount(ctx, "acct1")
			if err != nil {
				t.Fatalf("from %d: %v", from, err)
			}
			for v := 1; v <= from; v++ {
				checks[v](t, s, d)
			}
			s.Close()
		}
	})
}
