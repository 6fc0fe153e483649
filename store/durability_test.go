package store

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// TestCommitsAreDurable: every connection of the pool syncs the log at
// each commit (synchronous=FULL), so a revocation or a new key that was
// reported done survives a power loss.
func TestCommitsAreDurable(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	// Hold several connections at once so that the check covers more
	// than the first one the pool made.
	const n = 4
	for i := range n {
		c, err := s.db.Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		var mode int
		if err := c.QueryRowContext(ctx, "PRAGMA synchronous").Scan(&mode); err != nil {
			t.Fatal(err)
		}
		if mode != 2 {
			t.Fatalf("connection %d: synchronous = %d, want 2 (FULL)", i, mode)
		}
	}
	// Last-seen bookkeeping does not wait for the disk.
	var mode int
	if err := s.lazy.QueryRowContext(ctx, "PRAGMA synchronous").Scan(&mode); err != nil || mode != 1 {
		t.Fatalf("lazy connection: synchronous = %d, %v; want 1 (NORMAL)", mode, err)
	}
}

// BenchmarkCommit measures one commit of control's common writes under
// each durability: a login (the peer row and an event) and a peer's last
// seen time. MESHD_BENCH_DIR puts the database on the disk to measure
// (default: the test's temporary directory).
func BenchmarkCommit(b *testing.B) {
	for _, sync := range []string{"NORMAL", "FULL"} {
		b.Run("synchronous="+sync, func(b *testing.B) {
			dir := os.Getenv("MESHD_BENCH_DIR")
			if dir == "" {
				dir = b.TempDir()
			} else {
				dir, _ = os.MkdirTemp(dir, "meshd-bench-")
				b.Cleanup(func() { os.RemoveAll(dir) })
			}
			ctx := context.Background()
			s, err := open(ctx, filepath.Join(dir, "meshd.db"), Latest(), sync)
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { s.Close() })
			at := benchPeer(b, s)
			b.Run("login", func(b *testing.B) {
				for i := range b.N {
					err := s.Write(ctx, func(tx *Tx) error {
						p := Peer{ID: "p", AccountID: "a", PublicKey: "K", Name: "laptop", DNSLabel: "laptop",
							OverlayIP: "100.64.0.1", Created: at, LastLogin: at.Add(time.Duration(i))}
						if err := tx.PutPeer(p); err != nil {
							return err
						}
						return tx.AddEvent(Event{AccountID: "a", Time: p.LastLogin, Actor: "peer:p", Action: "peer.login",
							TargetType: "peer", TargetID: "p", Detail: strconv.Itoa(i)})
					})
					if err != nil {
						b.Fatal(err)
					}
				}
			})
			b.Run("last-seen", func(b *testing.B) {
				for i := range b.N {
					if _, err := s.db.ExecContext(ctx, `UPDATE peers SET last_seen = ? WHERE id = ?`, i, "p"); err != nil {
						b.Fatal(err)
					}
				}
			})
		})
	}
	// What control does: last seen through the lazy connection, whatever
	// the durability of the rest.
	b.Run("SetPeerLastSeen", func(b *testing.B) {
		s := openTest(b)
		benchPeer(b, s)
		ctx := context.Background()
		for i := range b.N {
			if err := s.SetPeerLastSeen(ctx, "p", time.Unix(0, int64(i))); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// benchPeer writes account "a" with peer "p" and returns their creation time.
func benchPeer(b *testing.B, s *Store) time.Time {
	b.Helper()
	at := time.Unix(1_700_000_000, 0)
	err := s.Write(context.Background(), func(tx *Tx) error {
		if err := tx.PutAccount(Account{ID: "a", Name: "home", OverlayNetwork: "100.64.0.0/16", Created: at}); err != nil {
			return err
		}
		return tx.PutPeer(Peer{ID: "p", AccountID: "a", PublicKey: "K", Name: "laptop", DNSLabel: "laptop",
			OverlayIP: "100.64.0.1", Created: at})
	})
	if err != nil {
		b.Fatal(err)
	}
	return at
}
