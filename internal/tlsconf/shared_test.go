package tlsconf

import (
	"crypto/tls"
	"errors"
	"sync"
	"testing"
)

// memStore keeps one secret as control's store does: the first writer wins.
type memStore struct {
	mu  sync.Mutex
	val []byte
}

func (m *memStore) load(gen func() ([]byte, error)) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.val == nil {
		v, err := gen()
		if err != nil {
			return nil, err
		}
		m.val = v
	}
	return m.val, nil
}

func shared(t *testing.T, dir string, hosts ...string) *Server {
	t.Helper()
	s, err := ServerConfig(Options{DataDir: dir, Hosts: hosts, SharedSelfSigned: true})
	if err != nil {
		t.Fatal(err)
	}
	if !s.NeedsSelfSigned() || s.Pin != "" {
		t.Fatalf("before ShareSelfSigned: needs %v, pin %q", s.NeedsSelfSigned(), s.Pin)
	}
	return s
}

// Replicas on different hosts serve the store's one certificate; the
// replica that put it there made it from its data directory.
func TestSharedSelfSignedOneIdentity(t *testing.T) {
	st := &memStore{}
	dirA, dirB := t.TempDir(), t.TempDir()
	a, b := shared(t, dirA, "198.51.100.1"), shared(t, dirB, "vpn2.example.org")
	pinA, err := a.ShareSelfSigned(st.load)
	if err != nil {
		t.Fatal(err)
	}
	pinB, err := b.ShareSelfSigned(st.load)
	if err != nil {
		t.Fatal(err)
	}
	if pinA == "" || pinA != pinB || a.Pin != pinA || b.Pin != pinB {
		t.Fatalf("pins %q and %q", pinA, pinB)
	}
	if DataDirPin(dirA) != pinA || DataDirPin(dirB) != "" {
		t.Fatalf("data dirs: %q, %q (want the store's in A's only)", DataDirPin(dirA), DataDirPin(dirB))
	}
	// The pin is all a client checks: B's certificate names A's address
	// only, and a client that asks for another name still connects.
	ln, err := tls.Listen("tcp", "127.0.0.1:0", b.Config)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_ = c.(*tls.Conn).Handshake()
			c.Close()
		}
	}()
	cfg, err := ClientConfig(pinA)
	if err != nil {
		t.Fatal(err)
	}
	cfg.ServerName = "replica-b.example.net"
	c, err := tls.Dial("tcp", ln.Addr().String(), cfg)
	if err != nil {
		t.Fatalf("pinned client to replica B: %v", err)
	}
	c.Close()
}

// A machine that had a certificate in its data directory keeps its pin
// when its certificate moves to the store.
func TestSharedSelfSignedKeepsDataDirPin(t *testing.T) {
	dir := t.TempDir()
	old, err := ServerConfig(Options{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	s := shared(t, dir)
	pin, err := s.ShareSelfSigned((&memStore{}).load)
	if err != nil || pin != old.Pin {
		t.Fatalf("pin %q (%v), want the data dir's %q", pin, err, old.Pin)
	}
	// A store that already has one wins; the file stays as it was.
	st := &memStore{}
	other := shared(t, t.TempDir())
	want, err := other.ShareSelfSigned(st.load)
	if err != nil {
		t.Fatal(err)
	}
	s = shared(t, dir)
	if pin, err := s.ShareSelfSigned(st.load); err != nil || pin != want {
		t.Fatalf("pin %q (%v), want the store's %q", pin, err, want)
	}
	if DataDirPin(dir) != old.Pin {
		t.Fatal("the data dir's certificate changed")
	}
	bad := shared(t, t.TempDir())
	if _, err := bad.ShareSelfSigned(func(func() ([]byte, error)) ([]byte, error) { return []byte("junk"), nil }); err == nil {
		t.Fatal("junk in the store accepted")
	}
	if _, err := bad.ShareSelfSigned(func(func() ([]byte, error)) ([]byte, error) { return nil, errors.New("store down") }); err == nil {
		t.Fatal("a store error ignored")
	}
}
