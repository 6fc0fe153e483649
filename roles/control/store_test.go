package control

import (
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"meshd/internal/pgtest"
)

// checkStoreFault runs `meshd control --store store` and checks that it
// exits within 10 s, naming addr and the database's error (want), and
// never printing the password (hunter2).
func checkStoreFault(t *testing.T, store, addr, want string) {
	t.Helper()
	start := time.Now()
	out, err := runControl(t, "--data", t.TempDir(), "--listen", "127.0.0.1:0",
		"--public-url", "https://vpn.example.org:33073", "--store", store)
	if err == nil {
		t.Fatalf("started:\n%s", out)
	}
	msg := err.Error() + out
	if !strings.Contains(msg, addr) || !strings.Contains(msg, want) || strings.Contains(msg, "hunter2") {
		t.Fatalf("message %q: want %s and %q, without the password", msg, addr, want)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("exited after %s, want within 10s", d)
	}
}

func TestControlStoreUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()
	checkStoreFault(t, "postgres://meshd:hunter2@"+closed+"/meshd?sslmode=disable", closed, "connection refused")
}

func TestControlStoreWrongPassword(t *testing.T) {
	srv := pgtest.Shared(t)
	u, _ := url.Parse(srv.NewDatabase(t))
	u.User = url.UserPassword(pgtest.User, "hunter2")
	checkStoreFault(t, u.String(), srv.Addr(), "password authentication failed")
}

// With --store on PostgreSQL the network lives there, not in --data; a
// restart finds it.
func TestControlOnPostgres(t *testing.T) {
	srv := pgtest.Shared(t)
	dir := t.TempDir()
	args := []string{"--data", dir, "--listen", "127.0.0.1:0", "--public-url", "https://vpn.example.org:33073",
		"--store", srv.NewDatabase(t)}
	first, err := runControl(t, args...)
	if err != nil || !strings.Contains(first, "created a new network") {
		t.Fatalf("first start: %v\n%s", err, first)
	}
	second, err := runControl(t, args...)
	if err != nil || strings.Contains(second, "created a new network") {
		t.Fatalf("second start made another network: %v\n%s", err, second)
	}
	if _, err := os.Stat(filepath.Join(dir, DBFile)); !os.IsNotExist(err) {
		t.Fatalf("a SQLite database in --data: %v", err)
	}
	if strings.Contains(first+second, srv.Password()) {
		t.Fatal("the store's password was printed")
	}
}
