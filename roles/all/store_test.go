package all

import (
	"net"
	"strings"
	"testing"
	"time"
)

// `meshd all` takes control's --store: an unreachable one ends it within
// 10 s with the server's address and error, without the password.
func TestAllStoreUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()
	begin := time.Now()
	r := start(t, t.TempDir(), freePort(t, "tcp"), freePort(t, "udp"),
		"--store", "postgres://meshd:hunter2@"+closed+"/meshd?sslmode=disable")
	err = r.untilJoin(15 * time.Second)
	if err == nil {
		t.Fatal("meshd all started without its store")
	}
	if msg := err.Error(); !strings.Contains(msg, "exited early") || !strings.Contains(msg, closed) ||
		!strings.Contains(msg, "connection refused") || strings.Contains(msg, "hunter2") {
		t.Fatalf("message: %s", msg)
	}
	if d := time.Since(begin); d > 10*time.Second {
		t.Fatalf("exited after %s, want within 10s", d)
	}
}
