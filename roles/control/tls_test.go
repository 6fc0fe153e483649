package control

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"go.uber.org/zap/zaptest"

	"meshd/internal/jointoken"
	"meshd/internal/server"
	"meshd/internal/tlsconf"
)

// startTLS runs Start with a self-signed certificate that waits for the
// store, and returns the pin it settled on and the join token's.
func startTLS(t *testing.T, dir string, hosts ...string) (pin, tokenPin string) {
	t.Helper()
	ts, err := tlsconf.ServerConfig(tlsconf.Options{DataDir: dir, Hosts: hosts, SharedSelfSigned: true})
	if err != nil {
		t.Fatal(err)
	}
	log := zaptest.NewLogger(t)
	cfg := Config{DataDir: dir, PublicURL: "https://127.0.0.1:33073", TLS: ts}
	cfg.SignalURL = cfg.PublicURL
	ctl, err := Start(context.Background(), cfg, server.New(log, ts.Config), log)
	if err != nil {
		t.Fatal(err)
	}
	defer ctl.Close()
	tok, err := jointoken.Decode(ctl.Boot.JoinToken)
	if err != nil {
		t.Fatal(err)
	}
	if ts.NeedsSelfSigned() || ts.Pin != ctl.TLSPin {
		t.Fatalf("after Start: needs a certificate %v, server pin %q, control's %q", ts.NeedsSelfSigned(), ts.Pin, ctl.TLSPin)
	}
	return ctl.TLSPin, tok.Pin
}

// The store's certificate is the network's: a replica without one in its
// data directory serves the one the first replica put in the store, so
// join tokens printed anywhere carry one pin.
func TestStartServesTheStoresCertificate(t *testing.T) {
	dir := t.TempDir()
	pin1, tok1 := startTLS(t, dir, "198.51.100.1")
	if pin1 == "" || tok1 != pin1 {
		t.Fatalf("first start: pin %q, token's %q", pin1, tok1)
	}
	// The next replica shares the store but not the data directory.
	for _, f := range []string{tlsconf.CertFileName, tlsconf.KeyFileName} {
		if err := os.Remove(filepath.Join(dir, f)); err != nil {
			t.Fatal(err)
		}
	}
	pin2, tok2 := startTLS(t, dir, "vpn2.example.org")
	if pin2 != pin1 || tok2 != pin1 {
		t.Fatalf("second replica: pin %q, token's %q, want %q", pin2, tok2, pin1)
	}
	if got := tlsconf.DataDirPin(dir); got != "" {
		t.Fatalf("a certificate %s was made in the data dir although the store has one", got)
	}
}

// A homelab that already had a certificate in --data keeps its pin: the
// file's certificate goes into the store.
func TestStartKeepsDataDirPin(t *testing.T) {
	dir := t.TempDir()
	_, old, err := tlsconf.LoadOrCreateSelfSigned(dir, []string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	for range 2 { // and again after a restart
		if pin, tok := startTLS(t, dir); pin != old || tok != old {
			t.Fatalf("pin %q, token's %q, want the data dir's %q", pin, tok, old)
		}
	}
}
