package store

import (
	"context"
	"reflect"
	"testing"
	"time"
)

// What Write puts, LoadAccount reads back unchanged.
func TestPutLoadRoundTrip(t *testing.T) {
	forEachBackend(t, testPutLoadRoundTrip)
}

func testPutLoadRoundTrip(t *testing.T, b backend) {
	ctx := context.Background()
	s := openTest(t, b)
	at := time.Unix(1_700_000_000, 123)
	want := &AccountData{
		Account: Account{ID: "a", Name: "home", OverlayNetwork: "100.64.0.0/16", DNSDomain: "meshd.internal",
			LoginExpiration: time.Hour, EphemeralOffline: 10 * time.Minute, Created: at},
		Groups: []Group{
			{ID: "gall", AccountID: "a", Name: "All", IsAll: true, Created: at},
			{ID: "geng", AccountID: "a", Name: "eng", Created: at.Add(1)},
			{ID: "gops", AccountID: "a", Name: "ops", Created: at.Add(2)},
		},
		SetupKeys: []SetupKey{{ID: "k", AccountID: "a", Name: "ci", Hash: []byte{1, 2}, Prefix: "AB", OneOff: true,
			Expires: at.Add(time.Hour), UsageLimit: 3, Used: 1, Ephemeral: true, LastUsed: at, Created: at,
			AutoGroups: []string{"geng"}}},
		Peers: []Peer{{ID: "p", AccountID: "a", PublicKey: "K", Name: "laptop", DNSLabel: "laptop", OverlayIP: "100.64.0.1",
			Hostname: "Laptop", OS: "linux", Version: "1", SetupKeyID: "k", LoginExpirationEnabled: true,
			LastLogin: at, LastSeen: at, Created: at, Groups: []string{"gops", "geng"}}}, // in the order given
		Policies: []Policy{{ID: "pol", AccountID: "a", Name: "web", Enabled: true, Protocol: "tcp",
			Ports: []string{"443", "80-81"}, Action: "accept", Created: at, Sources: []string{"gops", "geng"}, Destinations: []string{"gall"}}},
		Routes: []Route{{ID: "r", AccountID: "a", Network: "10.0.0.0/8", Metric: 10, Masquerade: true, Enabled: true,
			Created: at, Peers: []string{"p"}, Groups: []string{"geng"}}},
		NameserverGroups: []NameserverGroup{{ID: "n", AccountID: "a", Name: "corp", Nameservers: []string{"1.1.1.1"},
			MatchDomains: []string{"corp"}, Enabled: true, Created: at, Groups: []string{"geng"}}},
		DNSRecords: []DNSRecord{{ID: "d", AccountID: "a", Name: "nas", Type: "A", Value: "100.64.0.1", TTL: 60, Created: at}},
	}
	err := s.Write(ctx, func(tx *Tx) error {
		steps := []error{tx.PutAccount(want.Account)}
		for _, g := range want.Groups {
			steps = append(steps, tx.PutGroup(g))
		}
		steps = append(steps, tx.PutSetupKey(want.SetupKeys[0]), tx.PutPeer(want.Peers[0]), tx.PutPolicy(want.Policies[0]),
			tx.PutRoute(want.Routes[0]), tx.PutNameserverGroup(want.NameserverGroups[0]), tx.PutDNSRecord(want.DNSRecords[0]),
			tx.AddEvent(Event{AccountID: "a", Time: at, Actor: "t", Action: "x"}))
		for _, err := range steps {
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.LoadAccount(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got, want)
	}

	// A group a policy uses cannot be deleted.
	if err := s.Write(ctx, func(tx *Tx) error { return tx.DeleteGroup("geng") }); err == nil {
		t.Fatal("deleted a group in use")
	}
	// Deleting the peer drops it from routes and groups; deleting the key
	// keeps the peer.
	if err := s.Write(ctx, func(tx *Tx) error { return tx.DeleteSetupKey("k") }); err != nil {
		t.Fatal(err)
	}
	got, _ = s.LoadAccount(ctx, "a")
	if got.Peers[0].SetupKeyID != "" {
		t.Fatalf("peer keeps deleted key %q", got.Peers[0].SetupKeyID)
	}
	if err := s.Write(ctx, func(tx *Tx) error { return tx.DeletePeer("p") }); err != nil {
		t.Fatal(err)
	}
	got, _ = s.LoadAccount(ctx, "a")
	if len(got.Peers) != 0 || len(got.Routes[0].Peers) != 0 {
		t.Fatalf("after delete: peers %v, route peers %v", got.Peers, got.Routes[0].Peers)
	}

	if _, err := s.TakeSerials(ctx, "a", 100); err != nil {
		t.Fatal(err)
	}
	got, _ = s.LoadAccount(ctx, "a")
	if got.Account.Serial != 100 {
		t.Fatalf("serial = %d, want 100", got.Account.Serial)
	}

	v, err := s.SecretOrCreate(ctx, "x", func() ([]byte, error) { return []byte("one"), nil })
	if err != nil || string(v) != "one" {
		t.Fatalf("secret = %q, %v", v, err)
	}
	v, _ = s.SecretOrCreate(ctx, "x", func() ([]byte, error) { return []byte("two"), nil })
	if string(v) != "one" {
		t.Fatalf("secret replaced: %q", v)
	}
}

func TestTakeSerialsGrowsAcrossHandles(t *testing.T) {
	forEachBackend(t, func(t *testing.T, be backend) {
		target := be.newTarget(t)
		testTakeSerials(t, openTarget(t, target), openTarget(t, target)) // two replicas on one database
	})
}

func testTakeSerials(t *testing.T, a, b *Store) {
	ctx := context.Background()
	if err := a.Write(ctx, func(tx *Tx) error {
		return tx.PutAccount(Account{ID: "acc", Name: "n", OverlayNetwork: "100.64.0.0/16", DNSDomain: "n.internal"})
	}); err != nil {
		t.Fatal(err)
	}
	var last uint64
	for i, st := range []*Store{a, b, a, b} {
		first, err := st.TakeSerials(ctx, "acc", i+1)
		if err != nil {
			t.Fatal(err)
		}
		if first <= last {
			t.Fatalf("take %d: first serial %d, want above %d", i, first, last)
		}
		last = first + uint64(i)
	}
	if last != 10 {
		t.Fatalf("last serial %d, want 10 (1+2+3+4 taken)", last)
	}
	if _, err := a.TakeSerials(ctx, "nope", 1); err == nil {
		t.Fatal("serials of an unknown account: want an error")
	}
}
