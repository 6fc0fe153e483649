package control

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"

	"meshd/store"
)

func testData() *store.AccountData {
	t0 := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	d := &store.AccountData{Account: store.Account{ID: "acct", OverlayNetwork: "100.64.0.0/16", DNSDomain: "mesh", Created: t0}}
	d.Groups = []store.Group{{ID: "all", AccountID: "acct", Name: "All", IsAll: true, Created: t0}, {ID: "g", Name: "g", Created: t0}}
	for i, id := range []string{"p1", "p2", "p3"} {
		d.Peers = append(d.Peers, store.Peer{ID: id, AccountID: "acct", PublicKey: "k" + id, Name: id, DNSLabel: id,
			OverlayIP: "100.64.0." + string(rune('1'+i)), LastSeen: t0, Created: t0})
	}
	d.Policies = []store.Policy{{ID: "pol", Name: "pol", Enabled: true, Protocol: "all", Sources: []string{"all"}, Destinations: []string{"all"}, Created: t0}}
	return d
}

// A reload finds what changed in the store whatever the messages said: a
// peer deleted or renamed, a policy changed, a last-seen time; a time
// read back from the store equals the one in memory.
func TestReloadDiff(t *testing.T) {
	s := &Service{log: zap.NewNop(), now: time.Now}
	a, err := newAccount(s, testData())
	if err != nil {
		t.Fatal(err)
	}
	d := testData()
	for i := range d.Peers { // as read back from the store: no zone
		d.Peers[i].Created = time.Unix(0, d.Peers[i].Created.UnixNano())
	}
	if c, err := a.fill(d); err != nil || !c.Empty() {
		t.Fatalf("same data: change %+v, %v", c, err)
	}
	d = testData()
	d.Peers[0].LastSeen = d.Peers[0].LastSeen.Add(time.Minute)
	d.Peers[2].Name = "renamed"
	d.Peers = d.Peers[:1:1]
	d.Peers = append(d.Peers, store.Peer{ID: "p3", AccountID: "acct", PublicKey: "kp3", Name: "renamed", DNSLabel: "p3",
		OverlayIP: "100.64.0.3", Created: d.Account.Created, LastSeen: d.Account.Created})
	d.Policies[0].Destinations = []string{"g"}
	c, err := a.fill(d)
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(c.Peers)
	if c.All || !slices.Equal(c.Peers, []string{"p2", "p3"}) || !slices.Equal(c.Entries, []string{"p1"}) ||
		!slices.Contains(c.Groups, "g") || !slices.Contains(c.Groups, "all") {
		t.Fatalf("change = %+v", c)
	}
	d.Account.DNSDomain = "other"
	if c, _ := a.fill(d); !c.All {
		t.Fatalf("account settings changed: %+v, want all", c)
	}
}

// serialStore counts the takes of serials, each slow enough for others to
// gather behind it.
type serialStore struct {
	Store
	mu    sync.Mutex
	next  uint64
	calls int
}

func (f *serialStore) TakeSerials(ctx context.Context, accountID string, n int) (uint64, error) {
	time.Sleep(2 * time.Millisecond) // a database round trip
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	first := f.next + 1
	f.next += uint64(n)
	return first, nil
}

// Streams asking for serials at once share database calls, and each gets
// serials of its own.
func TestSerialsBatched(t *testing.T) {
	st := &serialStore{}
	s := &Service{log: zap.NewNop(), now: time.Now, st: st}
	a, err := newAccount(s, testData())
	if err != nil {
		t.Fatal(err)
	}
	const streams = 200
	got := make([]uint64, streams)
	var wg sync.WaitGroup
	for i := range streams {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got[i] = a.dist.takeSerials(context.Background(), 1)
		}()
	}
	wg.Wait()
	slices.Sort(got)
	if len(slices.Compact(slices.Clone(got))) != streams || got[0] != 1 || got[streams-1] != streams {
		t.Fatalf("serials %v, want 1..%d once each", got, streams)
	}
	if st.calls > streams/10 {
		t.Fatalf("%d streams took serials with %d database calls, want at most %d", streams, st.calls, streams/10)
	}
	t.Logf("%d streams, %d database calls", streams, st.calls)
}
