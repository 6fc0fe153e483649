package keys

import (
	"os"
	"path/filepath"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	p, err := Generate()
	if err != nil {
		t.Fatal(err)
	}
	q, err := ParsePrivate(p.String())
	if err != nil {
		t.Fatal(err)
	}
	if q.Public() != p.Public() {
		t.Fatal("public key changed after a base64 round trip")
	}
	pub, err := Parse(p.Public().String())
	if err != nil || pub != p.Public() {
		t.Fatalf("Parse(public) = %v, %v", pub, err)
	}
	if _, err := Parse("not a key"); err == nil {
		t.Fatal("Parse accepted garbage")
	}
}

// A vector computed by wg(8): `echo <priv> | wg pubkey`.
func TestKnownPublicKey(t *testing.T) {
	p, err := ParsePrivate("YAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := p.Public().String(), "Y2FD6uTgrq+/bbBAXCNOtE+PGk8Papoh7qaWBpQUXn0="; got != want {
		t.Fatalf("public = %s, want %s", got, want)
	}
}

func TestLoadOrCreate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "private.key")
	p1, created, err := LoadOrCreate(path)
	if err != nil || !created {
		t.Fatalf("first LoadOrCreate: created=%v err=%v", created, err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v, want 0600", st.Mode().Perm())
	}
	p2, created, err := LoadOrCreate(path)
	if err != nil || created {
		t.Fatalf("second LoadOrCreate: created=%v err=%v", created, err)
	}
	if p1.Public() != p2.Public() {
		t.Fatal("identity changed across loads")
	}
	if err := os.WriteFile(path, []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := LoadOrCreate(path); err == nil {
		t.Fatal("a corrupt key file was accepted")
	}
	if b, _ := os.ReadFile(path); string(b) != "garbage" {
		t.Fatal("a corrupt key file was overwritten")
	}
}
