package signaltest

import (
	"crypto/ed25519"
	"testing"
	"time"

	"meshd/internal/keys"
	"meshd/internal/seal"
)

// Tickets plays control's part in signal tests: it holds a ticket key
// (give Public to signal.Options.TicketKey) and issues tickets with it.
type Tickets struct {
	Public  ed25519.PublicKey
	private ed25519.PrivateKey
}

// NewTickets makes a fresh ticket key.
func NewTickets(tb testing.TB) *Tickets {
	tb.Helper()
	pub, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		tb.Fatal(err)
	}
	return &Tickets{Public: pub, private: priv}
}

// Issue returns a ticket for key in account, valid until expires.
func (t *Tickets) Issue(tb testing.TB, key keys.Key, account string, expires time.Time) []byte {
	tb.Helper()
	b, err := seal.IssueTicket(t.private, key, account, expires)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}
