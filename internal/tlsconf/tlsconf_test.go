package tlsconf

import (
	"crypto/tls"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestSelfSignedIsStableAndPinned(t *testing.T) {
	dir := t.TempDir()
	s1, err := ServerConfig(Options{DataDir: dir, Hosts: []string{"127.0.0.1", "vpn.example.org"}})
	if err != nil {
		t.Fatal(err)
	}
	s2, err := ServerConfig(Options{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if s1.Pin == "" || s1.Pin != s2.Pin {
		t.Fatalf("pin changed across restarts: %q then %q", s1.Pin, s2.Pin)
	}
	st, err := os.Stat(filepath.Join(dir, KeyFileName))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v, mode %v", err, st.Mode().Perm())
	}

	ln, err := tls.Listen("tcp", "127.0.0.1:0", s1.Config)
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
	dial := func(pin string) error {
		cfg, err := ClientConfig(pin)
		if err != nil {
			return err
		}
		c, err := tls.Dial("tcp", ln.Addr().String(), cfg)
		if err != nil {
			return err
		}
		return c.Close()
	}
	if err := dial(s1.Pin); err != nil {
		t.Fatalf("pinned dial failed: %v", err)
	}
	wrong := PinPrefix + "00000000000000000000000000000000000000000000000000000000000000ff"
	if err := dial(wrong); !errors.Is(err, ErrPinMismatch) {
		t.Fatalf("wrong pin: err = %v, want ErrPinMismatch", err)
	}
	if err := dial(""); err == nil {
		t.Fatal("a self-signed certificate passed CA verification")
	}
}

func TestParsePin(t *testing.T) {
	good := "SHA256:" // prefix is case sensitive by design
	if _, err := ParsePin(good + "ab"); err == nil {
		t.Fatal("accepted a bad prefix")
	}
	p, err := ParsePin("sha256:AB:CD" + "00000000000000000000000000000000000000000000000000000000000000"[:60])
	if err != nil {
		t.Fatal(err)
	}
	if p != "sha256:abcd000000000000000000000000000000000000000000000000000000000000" {
		t.Fatalf("normalised = %s", p)
	}
	if _, err := ParsePin("sha256:xyz"); err == nil {
		t.Fatal("accepted non-hex")
	}
}
