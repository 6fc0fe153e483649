package store

import (
	"context"
	"testing"
)

// Seeds and checks of the users migration; the placeholders before it get
// empty ones unless their own branch brings real ones.
func init() {
	for _, v := range []int{7, 8} {
		if _, ok := seeds[v]; !ok {
			seeds[v] = nil
			checks[v] = func(*testing.T, *Store, *AccountData) {}
		}
	}
	seeds[9] = []seed{
		{`INSERT INTO users (id, account_id, issuer, subject, email, role, created) VALUES ('u9', 'acct1', 'https://idp', 's9', 'a@b', 'admin', 9000)`, nil},
		{`INSERT INTO peer_users (peer_id, user_id) VALUES ('p1', 'u9')`, nil},
		{`INSERT INTO idp_groups (group_id) VALUES ('g-eng')`, nil},
	}
	checks[9] = func(t *testing.T, s *Store, d *AccountData) {
		sso, err := s.LoadSSO(context.Background(), "acct1")
		if err != nil || len(sso.Users) != 1 || sso.Users[0].Role != RoleAdmin || sso.PeerUsers["p1"] != "u9" || !sso.IdPGroups["g-eng"] {
			t.Errorf("sso data = %+v, %v", sso, err)
		}
	}
}
