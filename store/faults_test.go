package store

import (
	"context"
	"errors"
	"io"
	"net"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"meshd/internal/pgtest"
)

// A write transaction is all or nothing: a failing step, or fn's error,
// leaves no row of the earlier steps.
func TestWriteAllOrNothing(t *testing.T) {
	ctx := context.Background()
	forEachBackend(t, func(t *testing.T, b backend) {
		s := openTest(t, b)
		acct := Account{ID: "a", Name: "home", OverlayNetwork: "100.64.0.0/16", DNSDomain: "meshd.internal"}
		errStop := errors.New("stop")
		err := s.Write(ctx, func(tx *Tx) error {
			if err := tx.PutAccount(acct); err != nil {
				return err
			}
			return errStop
		})
		if !errors.Is(err, errStop) {
			t.Fatalf("err = %v", err)
		}
		err = s.Write(ctx, func(tx *Tx) error {
			if err := tx.PutAccount(acct); err != nil {
				return err
			}
			// The group does not exist: the foreign key fails this step.
			return tx.PutPeer(Peer{ID: "p", AccountID: "a", PublicKey: "K", Name: "n", DNSLabel: "n",
				OverlayIP: "100.64.0.1", Groups: []string{"nope"}})
		})
		if err == nil {
			t.Fatal("a peer in a missing group was written")
		}
		if IsUnavailable(err) {
			t.Fatalf("a constraint error reads as unavailable: %v", err)
		}
		if accts, err := s.Accounts(ctx); err != nil || len(accts) != 0 {
			t.Fatalf("accounts after failed writes = %+v, %v", accts, err)
		}
	})
}

// tcpProxy forwards a port on loopback to addr until cut.
type tcpProxy struct {
	t     *testing.T
	to    string
	addr  string
	mu    sync.Mutex
	ln    net.Listener
	conns []net.Conn
}

func newProxy(t *testing.T, to string) *tcpProxy {
	p := &tcpProxy{t: t, to: to, addr: "127.0.0.1:0"}
	p.listen()
	t.Cleanup(p.cut)
	return p
}

func (p *tcpProxy) listen() {
	ln, err := net.Listen("tcp", p.addr)
	if err != nil {
		p.t.Fatal(err)
	}
	p.mu.Lock()
	p.ln, p.addr = ln, ln.Addr().String()
	p.mu.Unlock()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", p.to)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, up)
			p.mu.Unlock()
			go func() { io.Copy(up, c); up.Close() }()
			go func() { io.Copy(c, up); c.Close() }()
		}
	}()
}

// cut closes the port and every connection through it, as a lost network
// or a dead server would.
func (p *tcpProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		p.ln.Close()
		p.ln = nil
	}
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

// Losing PostgreSQL makes reads and writes fail with an error that says
// so (IsUnavailable); when it is back, the same Store works again.
func TestLostConnectionIsUnavailable(t *testing.T) {
	ctx := context.Background()
	srv := pgtest.Shared(t)
	dsn := srv.NewDatabase(t)
	p := newProxy(t, srv.Addr())
	u, _ := url.Parse(dsn)
	u.Host = p.addr
	s := openTarget(t, u.String())
	acct := Account{ID: "a", Name: "home", OverlayNetwork: "100.64.0.0/16", DNSDomain: "meshd.internal"}
	put := func() error { return s.Write(ctx, func(tx *Tx) error { return tx.PutAccount(acct) }) }
	if err := put(); err != nil {
		t.Fatal(err)
	}

	p.cut()
	err := put()
	if !IsUnavailable(err) || !strings.Contains(err.Error(), "store unavailable") {
		t.Fatalf("write without the database: err = %v, want store unavailable", err)
	}
	if _, err := s.LoadAccount(ctx, "a"); !IsUnavailable(err) {
		t.Fatalf("read without the database: err = %v, want store unavailable", err)
	}

	p.listen()
	deadline := time.Now().Add(10 * time.Second)
	for err = put(); err != nil; err = put() {
		if time.Now().After(deadline) {
			t.Fatalf("database back, writes still fail: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if d, err := s.LoadAccount(ctx, "a"); err != nil || d.Account.Name != "home" {
		t.Fatalf("after the database came back: %+v, %v", d, err)
	}
}

// Opening an unreachable server fails fast, naming the host and port and
// the database's error, without the password.
func TestOpenUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	start := time.Now()
	_, err = Open(context.Background(), "postgres://meshd:hunter2@"+addr+"/meshd?sslmode=disable")
	if err == nil || !strings.Contains(err.Error(), addr) || !strings.Contains(err.Error(), "refused") ||
		strings.Contains(err.Error(), "hunter2") || !IsUnavailable(err) {
		t.Fatalf("err = %v; want one naming %s, connection refused, without the password", err, addr)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("took %s", d)
	}
	t.Log(err)
}

// A wrong password is refused with the server's error; it is not an
// outage.
func TestOpenWrongPassword(t *testing.T) {
	srv := pgtest.Shared(t)
	u, _ := url.Parse(srv.NewDatabase(t))
	u.User = url.UserPassword(pgtest.User, "wrong-password")
	_, err := Open(context.Background(), u.String())
	if err == nil || !strings.Contains(err.Error(), srv.Addr()) || !strings.Contains(err.Error(), "password authentication failed") ||
		strings.Contains(err.Error(), "wrong-password") || IsUnavailable(err) {
		t.Fatalf("err = %v", err)
	}
	t.Log(err)
}
