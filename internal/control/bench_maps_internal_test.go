package control

import (
	"context"
	"fmt"
	"net/netip"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"

	controlv1 "meshd/api/control/v1"
	"meshd/internal/netmap"
	"meshd/internal/pgtest"
	"meshd/store"
)

// BenchmarkStartMaps: what a replica does at its start for an account of
// 1k, 5k or 10k peers (groups of 50 as in the fan-out benchmarks, one
// policy each, All → All off): load the account from the store (SQLite or
// PostgreSQL), build its state, then compute the map of every peer. ns/op
// is the whole; load-ms, fill-ms and maps-ms are its parts. The store's
// part is the only one that differs between the two backends.
func BenchmarkStartMaps(b *testing.B) {
	for _, backend := range []string{"sqlite", "postgres"} {
		for _, n := range []int{1000, 5000, 10000} {
			b.Run(fmt.Sprintf("store=%s/peers=%d", backend, n), func(b *testing.B) {
				target := filepath.Join(b.TempDir(), "meshd.db")
				if backend == "postgres" {
					target = pgtest.Shared(b).NewDatabase(b)
				}
				st, id := seedAccount(b, target, n)
				ctx := context.Background()
				s := &Service{log: zap.NewNop(), now: time.Now}
				var load, fill, maps time.Duration
				var entries atomic.Int64
				for b.Loop() {
					t0 := time.Now()
					d, err := st.LoadAccount(ctx, id)
					if err != nil {
						b.Fatal(err)
					}
					t1 := time.Now()
					a, err := newAccount(s, d)
					if err != nil {
						b.Fatal(err)
					}
					for p := range a.peers {
						a.online[p] = 1
					}
					t2 := time.Now()
					entries.Store(0)
					netmap.Build(a.input()).ForEach(0, func(_ string, m *controlv1.NetworkMap) {
						entries.Add(int64(len(m.Peers) + len(m.FirewallRules)))
					})
					t3 := time.Now()
					load, fill, maps = load+t1.Sub(t0), fill+t2.Sub(t1), maps+t3.Sub(t2)
				}
				per := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 / float64(b.N) }
				b.ReportMetric(per(load), "load-ms")
				b.ReportMetric(per(fill), "fill-ms")
				b.ReportMetric(per(maps), "maps-ms")
				b.ReportMetric(float64(entries.Load())/float64(n), "entries/map")
			})
		}
	}
}

// seedAccount writes an account of n peers in groups of 50, one policy per
// group, into the store at target, in one transaction.
func seedAccount(b *testing.B, target string, n int) (*store.Store, string) {
	b.Helper()
	ctx := context.Background()
	st, err := store.Open(ctx, target)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	t0 := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	id := "bench"
	err = st.Write(ctx, func(tx *store.Tx) error {
		if err := tx.PutAccount(store.Account{ID: id, Name: "bench", OverlayNetwork: "100.64.0.0/16", DNSDomain: "mesh", Created: t0}); err != nil {
			return err
		}
		if err := tx.PutGroup(store.Group{ID: "all", AccountID: id, Name: "All", IsAll: true, Created: t0}); err != nil {
			return err
		}
		groups := (n + 49) / 50
		for g := range groups {
			gid := fmt.Sprintf("g%d", g)
			at := t0.Add(time.Duration(g+1) * time.Microsecond)
			if err := tx.PutGroup(store.Group{ID: gid, AccountID: id, Name: gid, Created: at}); err != nil {
				return err
			}
			if err := tx.PutPolicy(store.Policy{ID: "pol-" + gid, AccountID: id, Name: gid, Enabled: true, Protocol: "all",
				Bidirectional: true, Action: "accept", Created: at, Sources: []string{gid}, Destinations: []string{gid}}); err != nil {
				return err
			}
		}
		base := netip.MustParseAddr("100.64.0.1").As4()
		for i := range n {
			ip := base
			ip[2], ip[3] = byte((i+1)>>8), byte(i+1)
			if err := tx.PutPeer(store.Peer{ID: fmt.Sprintf("p%d", i), AccountID: id, PublicKey: fmt.Sprintf("key%040d", i),
				Name: fmt.Sprintf("peer-%d", i), DNSLabel: fmt.Sprintf("peer-%d", i), OverlayIP: netip.AddrFrom4(ip).String(),
				Hostname: "h", OS: "linux", Version: "test", LastLogin: t0, LastSeen: t0, Created: t0.Add(time.Duration(i) * time.Nanosecond),
				Groups: []string{fmt.Sprintf("g%d", i%groups)}}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	return st, id
}
