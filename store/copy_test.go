package store

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

// populate writes a network with a row in every table.
func populate(t *testing.T, s *Store) {
	t.Helper()
	ctx := context.Background()
	at := time.Unix(1_700_000_000, 123)
	err := s.Write(ctx, func(tx *Tx) error {
		steps := []error{
			tx.PutAccount(Account{ID: "a", Name: "home", OverlayNetwork: "100.64.0.0/16", DNSDomain: "meshd.internal",
				LoginExpiration: time.Hour, EphemeralOffline: time.Minute, Created: at}),
			tx.SetBootstrapKey("a", "k"),
			tx.PutAdminToken(AdminToken{ID: "t", AccountID: "a", Name: "bootstrap", Hash: []byte{0, 1, 2, 255}, Created: at, LastUsed: at}),
			tx.PutGroup(Group{ID: "gall", AccountID: "a", Name: "All", IsAll: true, Created: at}),
			tx.PutGroup(Group{ID: "gz", AccountID: "a", Name: "z", Created: at.Add(1)}),
			tx.PutGroup(Group{ID: "ga", AccountID: "a", Name: "a", Created: at.Add(2)}),
			tx.PutSetupKey(SetupKey{ID: "k", AccountID: "a", Name: "bootstrap", Hash: []byte{9, 9}, Prefix: "AB", UsageLimit: 5,
				Used: 2, Expires: at.Add(time.Hour), LastUsed: at, Created: at, AutoGroups: []string{"gz", "ga"}}),
		}
		for i := range 3 {
			steps = append(steps, tx.PutPeer(Peer{ID: fmt.Sprintf("p%d", i), AccountID: "a", PublicKey: fmt.Sprintf("KEY%d=", i),
				Name: fmt.Sprintf("peer%d", i), DNSLabel: fmt.Sprintf("peer%d", i), OverlayIP: fmt.Sprintf("100.64.0.%d", i+1),
				SetupKeyID: "k", LoginExpirationEnabled: i == 1, LastLogin: at, LastSeen: at.Add(time.Duration(i)), Created: at,
				Groups: []string{"gz", "ga"}}))
		}
		steps = append(steps,
			tx.PutPolicy(Policy{ID: "pol", AccountID: "a", Name: "web", Enabled: true, Protocol: "tcp", Ports: []string{"443"},
				Action: "accept", Created: at, Sources: []string{"gz", "ga"}, Destinations: []string{"gall"}}),
			tx.PutRoute(Route{ID: "r", AccountID: "a", Network: "10.0.0.0/8", Metric: 10, Enabled: true, Created: at,
				Peers: []string{"p2", "p0"}, Groups: []string{"gz", "ga"}}),
			tx.PutNameserverGroup(NameserverGroup{ID: "n", AccountID: "a", Name: "corp", Nameservers: []string{"10.0.0.53"},
				Enabled: true, Created: at, Groups: []string{"gz", "ga"}}),
			tx.PutDNSRecord(DNSRecord{ID: "d", AccountID: "a", Name: "nas", Type: "A", Value: "100.64.0.1", TTL: 60, Created: at}),
			tx.AddEvent(Event{AccountID: "a", Time: at, Actor: "admin", Action: "peer.added", TargetID: "p0"}),
			tx.AddEvent(Event{AccountID: "a", Time: at.Add(1), Actor: "admin", Action: "peer.added", TargetID: "p1"}),
			tx.PutUser(User{ID: "u", AccountID: "a", Issuer: "https://idp.example", Subject: "s1", Email: "ann@example.org",
				Name: "Ann", Role: RoleAdmin, Created: at, LastLogin: at}),
			tx.SetPeerUser("p1", "u"),
			tx.SetIdPGroup("ga"),
			tx.PutSecret("control_key", []byte{1, 2, 3}),
			tx.PutSecret("turn_secret", []byte("s3cret")),
		)
		return errors.Join(steps...)
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.TakeSerials(ctx, "a", 41); err != nil {
		t.Fatal(err)
	}
}

// dump reads every table of s: its rows as text with their Go types, in
// insertion order where the order is kept, sorted elsewhere.
func dump(t *testing.T, s *Store) map[string][]string {
	t.Helper()
	ctx := context.Background()
	tables, err := s.d.tables(ctx, s.db)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]string{}
	for _, table := range tables {
		if table == "sqlite_sequence" {
			continue
		}
		q := "SELECT * FROM " + table
		ordered := slices.Contains(orderedTables, table)
		if ordered {
			q += " ORDER BY rowid"
		}
		rows, err := s.db.QueryContext(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		all, _ := rows.Columns()
		var got []string
		for rows.Next() {
			vals := make([]any, len(all))
			ptrs := make([]any, len(all))
			for i := range vals {
				ptrs[i] = &vals[i]
			}
			if err := rows.Scan(ptrs...); err != nil {
				t.Fatal(err)
			}
			row := ""
			for i, c := range all {
				if c != "rowid" {
					row += fmt.Sprintf("%s=%T:%v ", c, vals[i], vals[i])
				}
			}
			got = append(got, row)
		}
		rows.Close()
		if !ordered {
			slices.Sort(got)
		}
		out[table] = got
	}
	return out
}

// A network copied from SQLite to PostgreSQL, and back, has the same rows
// in every table, and the copy takes new writes.
func TestCopySQLiteToPostgres(t *testing.T) {
	ctx := context.Background()
	src := openTest(t)
	populate(t, src)
	pg := asIs(t, postgresBackend.newTarget(t))
	if err := Copy(ctx, src, pg); err != nil {
		t.Fatal(err)
	}
	back := asIs(t, sqliteBackend.newTarget(t))
	if err := Copy(ctx, pg, back); err != nil {
		t.Fatal(err)
	}
	want := dump(t, src)
	if len(want) < 13 {
		t.Fatalf("only %d tables", len(want))
	}
	for name, s := range map[string]*Store{"postgres": pg, "sqlite again": back} {
		got := dump(t, s)
		for table, rows := range want {
			if strings.HasPrefix(table, "cluster_") {
				if len(got[table]) != 0 {
					t.Errorf("%s: table %s: %d rows copied, want none (replicas' state stays behind)", name, table, len(got[table]))
				}
				continue
			}
			if len(rows) == 0 && table != "sqlite_sequence" {
				t.Errorf("table %s: no rows to compare: populate it", table)
			}
			if !slices.Equal(got[table], rows) {
				t.Errorf("%s: table %s:\n got %q\nwant %q", name, table, got[table], rows)
			}
		}
		if len(got) != len(want) {
			t.Errorf("%s: tables %v, want %v", name, keys(got), keys(want))
		}
		if v, err := s.Version(ctx); err != nil || v != Latest() {
			t.Errorf("%s: version %d, %v", name, v, err)
		}
	}
	a, _ := src.LoadAccount(ctx, "a")
	b, err := pg.LoadAccount(ctx, "a")
	if err != nil || !reflect.DeepEqual(a, b) {
		t.Fatalf("account after copy:\n got %+v, %v\nwant %+v", b, err, a)
	}
	// New events continue above the copied ones.
	if err := pg.Write(ctx, func(tx *Tx) error { return tx.AddEvent(Event{AccountID: "a", Actor: "x", Action: "new"}) }); err != nil {
		t.Fatal(err)
	}
	ev, err := pg.Events(ctx, "a", 1)
	if err != nil || len(ev) != 1 || ev[0].Action != "new" || ev[0].ID != 3 {
		t.Fatalf("newest event after copy = %+v, %v", ev, err)
	}
	if first, err := pg.TakeSerials(ctx, "a", 1); err != nil || first != 42 {
		t.Fatalf("serial after copy = %d, %v; want 42", first, err)
	}
}

// A source of an older schema is copied and migrated on the target; the
// source stays as it was.
func TestCopyOlderSource(t *testing.T) {
	ctx := context.Background()
	const from = 3
	file := sqliteBackend.newTarget(t)
	for v := 1; v <= from; v++ {
		s, err := OpenAt(ctx, file, v)
		if err != nil {
			t.Fatal(err)
		}
		for _, q := range seeds[v] {
			if _, err := s.exec(ctx, s.db, q.q, q.args...); err != nil {
				t.Fatal(err)
			}
		}
		s.Close()
	}
	forEachBackend(t, func(t *testing.T, b backend) {
		src := asIs(t, file)
		dst := asIs(t, b.newTarget(t))
		if err := Copy(ctx, src, dst); err != nil {
			t.Fatal(err)
		}
		if v, _ := src.Version(ctx); v != from {
			t.Fatalf("source migrated to %d", v)
		}
		d, err := dst.LoadAccount(ctx, "acct1")
		if err != nil {
			t.Fatal(err)
		}
		for v := 1; v <= from; v++ {
			checks[v](t, dst, d)
		}
	})
}

// The target must be empty; a refused copy writes nothing.
func TestCopyRefusesNonEmptyTarget(t *testing.T) {
	ctx := context.Background()
	src := openTest(t)
	populate(t, src)
	forEachBackend(t, func(t *testing.T, b backend) {
		target := b.newTarget(t)
		dst := openTarget(t, target)
		if err := dst.Write(ctx, func(tx *Tx) error { return tx.PutSecret("mine", []byte("1")) }); err != nil {
			t.Fatal(err)
		}
		if err := Copy(ctx, src, dst); !errors.Is(err, ErrNotEmpty) {
			t.Fatalf("err = %v, want ErrNotEmpty", err)
		}
		if accts, err := dst.Accounts(ctx); err != nil || len(accts) != 0 {
			t.Fatalf("target accounts = %v, %v", accts, err)
		}
		empty := asIs(t, b.newTarget(t))
		if err := Copy(ctx, empty, asIs(t, b.newTarget(t))); err == nil {
			t.Fatal("copied an empty source")
		}
	})
}

func asIs(t *testing.T, target string) *Store {
	t.Helper()
	s, err := OpenAsIs(context.Background(), target)
	if err != nil {
		if file, ok := sqliteFile(target); ok {
			// A new SQLite target: OpenAsIs wants the file.
			s, err = OpenAt(context.Background(), file, 0)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func keys(m map[string][]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
