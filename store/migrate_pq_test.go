package store

import "testing"

// Seeds and checks of migrations 7 and 8, kept apart from migrate_test.go.
func init() {
	if _, ok := seeds[7]; !ok { // the placeholder of 0007
		seeds[7] = nil
		checks[7] = func(*testing.T, *Store, *AccountData) {}
	}
	seeds[8] = []seed{
		{`UPDATE accounts SET post_quantum = 'strict' WHERE id = 'acct5'`, nil},
		{`INSERT INTO peers (id, account_id, public_key, name, dns_label, overlay_ip, post_quantum, login_expiration_enabled, last_login, created)
		 VALUES ('p8', 'acct1', 'PUBKEY8', 'pq', 'pq', '100.64.0.8', 1, 0, 8000, 8000)`, nil},
	}
	checks[8] = func(t *testing.T, s *Store, d *AccountData) {
		// Accounts from before 0008 are off; peers do not support it until
		// their agent says so.
		if d.Account.PostQuantum != "off" {
			t.Errorf("post_quantum of an old account = %q", d.Account.PostQuantum)
		}
		for _, p := range d.Peers {
			if p.PostQuantum != (p.ID == "p8") {
				t.Errorf("peer %s post_quantum %v", p.ID, p.PostQuantum)
			}
		}
	}
}
