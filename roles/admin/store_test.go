package admin

import (
	"database/sql"
	"maps"
	"path/filepath"
	"strings"
	"testing"

	"meshd/internal/control/controltest"
	"meshd/internal/pgtest"
)

// identity is what an agent must keep across a move of the database: its
// own id, key and address, and the peers it sees with theirs.
func identity(m *controltest.Map) (string, map[string]string) {
	peers := map[string]string{}
	for _, p := range m.Peers {
		peers[p.PublicKey] = p.OverlayIp
	}
	return m.Self.PeerId + " " + m.Self.PublicKey + " " + m.Self.OverlayIp, peers
}

// `meshd admin store copy` moves a SQLite network into PostgreSQL; control
// started on the copy serves the same agents, with the same identities,
// admin token and secrets.
func TestStoreCopyKeepsIdentity(t *testing.T) {
	srv := pgtest.Shared(t)
	h := controltest.NewHarness(t, 2)
	type before struct {
		self   string
		peers  map[string]string
		serial uint64
	}
	var was []before
	for _, a := range h.Agents {
		m := a.WaitFor(t, "a peer", func(m *controltest.Map) bool { return len(m.Peers) == 1 })
		self, peers := identity(m)
		was = append(was, before{self, peers, m.Serial})
	}
	secret := string(h.Service.TURNSecret())
	dsn := srv.NewDatabase(t)
	from := "sqlite://" + filepath.Join(h.Dir, "meshd.db")
	h.RestartOn(dsn, func() {
		out, code, msg := runAdmin(t, h, "store", "copy", "--from", from, "--to", dsn)
		if code != 0 || !strings.Contains(out, "copied 1 network(s) with 2 peer(s)") || strings.Contains(out, srv.Password()) {
			t.Fatalf("store copy: exit %d: %s\n%s", code, msg, out)
		}
	})
	if h.Store.Engine() != "postgres" {
		t.Fatalf("control restarted on %s", h.Store.Engine())
	}
	for i, a := range h.Agents {
		m := a.WaitFor(t, "a map from the copy", func(m *controltest.Map) bool { return m.Serial > was[i].serial })
		self, peers := identity(m)
		if self != was[i].self || !maps.Equal(peers, was[i].peers) {
			t.Errorf("agent %d after the move: %s %v, want %s %v", i, self, peers, was[i].self, was[i].peers)
		}
	}
	if got := string(h.Service.TURNSecret()); got != secret {
		t.Error("the TURN secret changed")
	}
	if out := ok(t, h, "peers", "list"); !strings.Contains(out, "agent-0") || !strings.Contains(out, "agent-1") {
		t.Fatalf("admin token after the move: %s", out)
	}

	// The target now holds a network: a second copy is refused.
	_, code, msg := runAdmin(t, h, "store", "copy", "--from", from, "--to", dsn)
	if code != 1 || !strings.Contains(msg, "already holds a meshd database") || strings.Contains(msg, srv.Password()) {
		t.Fatalf("copy into a full target: exit %d: %s", code, msg)
	}
}

func TestStoreCopyBadSource(t *testing.T) {
	h := controltest.NewHarness(t, 0)
	missing := filepath.Join(t.TempDir(), "nope.db")
	_, code, msg := runAdmin(t, h, "store", "copy", "--from", missing, "--to", filepath.Join(t.TempDir(), "to.db"))
	if code != 1 || !strings.Contains(msg, "source") || !strings.Contains(msg, "no such file") {
		t.Fatalf("missing source: exit %d: %s", code, msg)
	}

	// A source written by a newer meshd.
	newer := filepath.Join(t.TempDir(), "newer.db")
	db, err := sql.Open("sqlite", newer)
	if err != nil {
		t.Fatal(err)
	}
	_, err = db.Exec("PRAGMA user_version = 9999")
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	_, code, msg = runAdmin(t, h, "store", "copy", "--from", newer, "--to", filepath.Join(t.TempDir(), "to.db"))
	if code != 1 || !strings.Contains(msg, "newer meshd") {
		t.Fatalf("newer source: exit %d: %s", code, msg)
	}

	_, code, msg = runAdmin(t, h, "store", "copy", "--to", "x.db")
	if code == 0 || !strings.Contains(msg, "from") {
		t.Fatalf("no --from: exit %d: %s", code, msg)
	}
}
