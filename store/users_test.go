package store

import (
	"context"
	"path/filepath"
	"testing"
	"time"
)

// Users, their peers and provider-managed groups survive a reopen; deleting
// a peer forgets its owner, deleting a group forgets its mark.
func TestUsersRoundTrip(t *testing.T) {
	ctx := context.Background()
	file := filepath.Join(t.TempDir(), "meshd.db")
	s, err := Open(ctx, file)
	if err != nil {
		t.Fatal(err)
	}
	at := time.Unix(1000, 0)
	u := User{ID: "u1", AccountID: "a", Issuer: "https://idp", Subject: "sub-1", Email: "ann@example.com", Name: "Ann",
		Role: RoleAuditor, Blocked: true, Created: at, LastLogin: at.Add(time.Hour)}
	err = s.Write(ctx, func(tx *Tx) error {
		for _, f := range []func() error{
			func() error {
				return tx.PutAccount(Account{ID: "a", Name: "home", OverlayNetwork: "100.64.0.0/16", Created: at})
			},
			func() error { return tx.PutGroup(Group{ID: "g1", AccountID: "a", Name: "eng", Created: at}) },
			func() error { return tx.PutGroup(Group{ID: "g2", AccountID: "a", Name: "ops", Created: at}) },
			func() error {
				return tx.PutPeer(Peer{ID: "p1", AccountID: "a", PublicKey: "K1", Name: "l", DNSLabel: "l", OverlayIP: "100.64.0.1", LastLogin: at, Created: at})
			},
			func() error {
				return tx.PutPeer(Peer{ID: "p2", AccountID: "a", PublicKey: "K2", Name: "m", DNSLabel: "m", OverlayIP: "100.64.0.2", LastLogin: at, Created: at})
			},
			func() error { return tx.PutUser(u) },
			func() error { return tx.SetPeerUser("p1", "u1") },
			func() error { return tx.SetPeerUser("p2", "u1") },
			func() error { return tx.SetIdPGroup("g1") },
			func() error { return tx.SetIdPGroup("g2") },
			func() error { return tx.SetIdPGroup("g1") }, // again: no error
		} {
			if err := f(); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if s, err = Open(ctx, file); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	d, err := s.LoadSSO(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Users) != 1 || d.Users[0] != u {
		t.Fatalf("users = %+v, want %+v", d.Users, u)
	}
	if d.PeerUsers["p1"] != "u1" || d.PeerUsers["p2"] != "u1" || !d.IdPGroups["g1"] || !d.IdPGroups["g2"] {
		t.Fatalf("peer users %v, idp groups %v", d.PeerUsers, d.IdPGroups)
	}
	err = s.Write(ctx, func(tx *Tx) error {
		if err := tx.DeletePeer("p2"); err != nil {
			return err
		}
		return tx.DeleteGroup("g2")
	})
	if err != nil {
		t.Fatal(err)
	}
	if d, err = s.LoadSSO(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if len(d.PeerUsers) != 1 || len(d.IdPGroups) != 1 {
		t.Fatalf("after deletes: peer users %v, idp groups %v", d.PeerUsers, d.IdPGroups)
	}
	if err := s.Write(ctx, func(tx *Tx) error { return tx.DeleteUser("u1") }); err != nil {
		t.Fatal(err)
	}
	if d, err = s.LoadSSO(ctx, "a"); err != nil || len(d.Users) != 0 || len(d.PeerUsers) != 0 {
		t.Fatalf("after deleting the user: %+v, %v", d, err)
	}
}
