package turncred

import (
	"errors"
	"testing"
	"time"
)

func TestIssueCheck(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	c := Issue([]byte("s3cret"), "peerA", now, time.Hour)
	if c.Username != "1700003600:peerA" {
		t.Fatalf("username = %q", c.Username)
	}
	// Reference value: printf '1700003600:peerA' | openssl dgst -sha1 -hmac s3cret -binary | base64
	if c.Password != "kgvIT/BrMSACAQcxS2NXVWxr5D8=" {
		t.Fatalf("password = %q", c.Password)
	}
	if _, err := Check(c.Username, now); err != nil {
		t.Fatal(err)
	}
	if _, err := Check(c.Username, now.Add(time.Hour)); !errors.Is(err, ErrExpired) {
		t.Fatalf("err = %v, want ErrExpired", err)
	}
	if _, err := Check("peerA", now); !errors.Is(err, ErrMalformed) {
		t.Fatalf("err = %v, want ErrMalformed", err)
	}
}

func TestParse(t *testing.T) {
	exp, id, err := Parse("1700003600:peer:A")
	if err != nil || !exp.Equal(time.Unix(1_700_003_600, 0)) || id != "peer:A" {
		t.Fatalf("Parse = %v, %q, %v", exp, id, err)
	}
	for _, bad := range []string{"", "peerA", "soon:peerA"} {
		if _, _, err := Parse(bad); !errors.Is(err, ErrMalformed) {
			t.Errorf("Parse(%q) err = %v, want ErrMalformed", bad, err)
		}
	}
}
