package seal

import (
	"crypto/ed25519"
	"errors"
	"testing"
	"time"
)

func TestTicket(t *testing.T) {
	pub, priv, _ := ed25519.GenerateKey(nil)
	otherPub, otherPriv, _ := ed25519.GenerateKey(nil)
	a, b := pair(t)
	now := time.Unix(1_700_000_000, 0)
	tk, err := IssueTicket(priv, a.Public(), "acct-1", now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	got, err := VerifyTicket(pub, tk, a.Public(), now)
	if err != nil || got.Account != "acct-1" || got.Key != a.Public() || !got.Expires.Equal(now.Add(time.Hour)) {
		t.Fatalf("valid ticket: %+v, %v", got, err)
	}
	if _, err := VerifyTicket(pub, tk, a.Public(), now.Add(time.Hour+TicketSkew-time.Second)); err != nil {
		t.Fatalf("within the skew: %v", err)
	}
	if _, err := VerifyTicket(pub, tk, a.Public(), now.Add(time.Hour+TicketSkew+time.Second)); !errors.Is(err, ErrTicketExpired) {
		t.Fatalf("expired: %v", err)
	}
	if _, err := VerifyTicket(pub, tk, b.Public(), now); !errors.Is(err, ErrTicketInvalid) {
		t.Fatalf("another key's ticket: %v", err)
	}
	if _, err := VerifyTicket(otherPub, tk, a.Public(), now); !errors.Is(err, ErrTicketInvalid) {
		t.Fatalf("another control's key: %v", err)
	}
	forged, _ := IssueTicket(otherPriv, a.Public(), "acct-1", now.Add(time.Hour))
	if _, err := VerifyTicket(pub, forged, a.Public(), now); !errors.Is(err, ErrTicketInvalid) {
		t.Fatalf("signed by another control: %v", err)
	}
	if _, err := VerifyTicket(pub, nil, a.Public(), now); !errors.Is(err, ErrNoTicket) {
		t.Fatalf("no ticket: %v", err)
	}
	for i := range tk { // any change breaks it
		bad := append([]byte(nil), tk...)
		bad[i] ^= 1
		if _, err := VerifyTicket(pub, bad, a.Public(), now); err == nil {
			t.Fatalf("ticket with byte %d flipped accepted", i)
		}
	}
	for _, n := range []int{0, 3, len(tk) - 1} {
		if _, err := VerifyTicket(pub, tk[:n], a.Public(), now); err == nil {
			t.Fatalf("ticket cut to %d bytes accepted", n)
		}
	}
}
