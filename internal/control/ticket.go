package control

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"time"

	"go.uber.org/zap"

	"meshd/internal/keys"
	"meshd/internal/seal"
)

// DefaultTicketTTL is how long a signal ticket is valid. Every map carries a
// fresh one and maps are refreshed before it expires, so a connected peer
// never holds an expired ticket; a deleted peer's last ticket lets it
// register at signal (and talk to no one who still lists it) for at most
// this long.
const DefaultTicketTTL = 12 * time.Hour

const secretTicketKey = "signal_ticket_key" // Ed25519 seed

// loadTicketKey reads control's ticket signing key, creating it the first
// time.
func (s *Service) loadTicketKey(ctx context.Context) error {
	seed, err := s.st.SecretOrCreate(ctx, secretTicketKey, func() ([]byte, error) {
		b := make([]byte, ed25519.SeedSize)
		_, err := rand.Read(b)
		return b, err
	})
	if err != nil {
		return fmt.Errorf("control: %w", err)
	}
	if len(seed) != ed25519.SeedSize {
		return fmt.Errorf("control: stored ticket key is %d bytes, want %d", len(seed), ed25519.SeedSize)
	}
	s.ticketKey = ed25519.NewKeyFromSeed(seed)
	return nil
}

// TicketKey is the Ed25519 key signal checks tickets with: `meshd all`
// hands it to its in-process signal, a separate `meshd signal` takes it as
// --control-key (TicketKeyString).
func (s *Service) TicketKey() ed25519.PublicKey {
	return s.ticketKey.Public().(ed25519.PublicKey)
}

// TicketKeyString is TicketKey in base64, as --control-key takes it.
func (s *Service) TicketKeyString() string {
	k, _ := keys.FromBytes(s.TicketKey())
	return k.String()
}

// ticket signs a ticket for pub in account a, and says when it expires.
func (s *Service) ticket(a *account, pub keys.Key) ([]byte, time.Time) {
	exp := s.now().Add(s.ticketTTL()).Truncate(time.Second)
	t, err := seal.IssueTicket(s.ticketKey, pub, a.id, exp)
	if err != nil { // account ids are short; never happens
		s.log.Error("signal ticket", zap.Error(err))
		return nil, time.Time{}
	}
	return t, exp
}

func (s *Service) ticketTTL() time.Duration {
	if s.opts.TicketTTL > 0 {
		return s.opts.TicketTTL
	}
	return DefaultTicketTTL
}
