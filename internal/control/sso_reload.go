package control

import (
	"context"

	"meshd/internal/netmap"
)

// reloadSSO reads the account's users, peer owners and provider-managed
// groups again (another replica changed them) and returns the change for
// maps: the peers whose owner, or whose owner's blocked state, differs.
// Callers hold mu, or own a.
func (a *account) reloadSSO(ctx context.Context) (netmap.Change, error) {
	d, err := a.s.st.LoadSSO(ctx, a.id)
	if err != nil {
		return netmap.Change{}, err
	}
	old := a.sso
	a.sso.init(d)
	owner := func(st *ssoState, peer string) (string, bool) {
		uid := st.peerUser[peer]
		u := st.users[uid]
		return uid, u != nil && u.Blocked
	}
	var changed []string
	seen := map[string]bool{}
	for _, m := range []map[string]string{old.peerUser, a.sso.peerUser} {
		for p := range m {
			if seen[p] {
				continue
			}
			seen[p] = true
			u1, b1 := owner(&old, p)
			u2, b2 := owner(&a.sso, p)
			if u1 != u2 || b1 != b2 {
				changed = append(changed, p)
			}
		}
	}
	return netmap.Change{Peers: changed}, nil
}
