package seal

import (
	"crypto/ed25519"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"meshd/internal/keys"
)

// A ticket is control's signed word that a WireGuard key is a peer of an
// account until a time. Control puts a fresh one in every network map; the
// agent shows it when it registers at signal, and signal, which has only
// control's public ticket key, lets a key register only with a valid ticket
// and forwards envelopes only between keys of the same account. A key that
// control does not know can therefore neither register nor reach anyone.
//
// Layout (bytes): "mt1", expiry (unix seconds, big-endian int64), the
// WireGuard public key (32), the account's length (1) and the account, then
// the Ed25519 signature (64) over ticketDomain followed by all of that.

const (
	ticketMagic    = "mt1"
	ticketDomain   = "meshd/signal-ticket/v1\x00"
	ticketFixedLen = len(ticketMagic) + 8 + keys.Len + 1
	// MaxTicketLen is the largest ticket: the longest account ID.
	MaxTicketLen = ticketFixedLen + 255 + ed25519.SignatureSize
	// TicketSkew is how far past its expiry a ticket is still accepted, for
	// clocks that differ a little between control and signal.
	TicketSkew = 2 * time.Minute
)

// Errors of VerifyTicket; the error returned wraps one of them.
var (
	ErrNoTicket      = errors.New("seal: no ticket from control")
	ErrTicketInvalid = errors.New("seal: ticket invalid (not signed by this control, or for another key)")
	ErrTicketExpired = errors.New("seal: ticket expired")
)

// Ticket is what a valid ticket says.
type Ticket struct {
	Key     keys.Key
	Account string
	Expires time.Time
}

// IssueTicket signs a ticket for key in account, valid until expires.
func IssueTicket(signer ed25519.PrivateKey, key keys.Key, account string, expires time.Time) ([]byte, error) {
	if len(account) > 255 {
		return nil, fmt.Errorf("seal: ticket: account id of %d bytes, at most 255", len(account))
	}
	b := make([]byte, 0, ticketFixedLen+len(account)+ed25519.SignatureSize)
	b = append(b, ticketMagic...)
	b = binary.BigEndian.AppendUint64(b, uint64(expires.Unix()))
	b = append(b, key[:]...)
	b = append(b, byte(len(account)))
	b = append(b, account...)
	sig := ed25519.Sign(signer, append([]byte(ticketDomain), b...))
	return append(b, sig...), nil
}

// VerifyTicket checks that t was signed by the holder of control's ticket
// key, is for key, and has not expired at now (give or take TicketSkew).
func VerifyTicket(control ed25519.PublicKey, t []byte, key keys.Key, now time.Time) (Ticket, error) {
	if len(t) == 0 {
		return Ticket{}, ErrNoTicket
	}
	if len(t) < ticketFixedLen+ed25519.SignatureSize || len(t) > MaxTicketLen || string(t[:len(ticketMagic)]) != ticketMagic {
		return Ticket{}, fmt.Errorf("%w: malformed (%d bytes)", ErrTicketInvalid, len(t))
	}
	body, sig := t[:len(t)-ed25519.SignatureSize], t[len(t)-ed25519.SignatureSize:]
	n := int(body[ticketFixedLen-1])
	if len(body) != ticketFixedLen+n {
		return Ticket{}, fmt.Errorf("%w: malformed", ErrTicketInvalid)
	}
	if len(control) != ed25519.PublicKeySize || !ed25519.Verify(control, append([]byte(ticketDomain), body...), sig) {
		return Ticket{}, fmt.Errorf("%w: bad signature", ErrTicketInvalid)
	}
	var tk Ticket
	p := body[len(ticketMagic):]
	tk.Expires = time.Unix(int64(binary.BigEndian.Uint64(p)), 0)
	copy(tk.Key[:], p[8:8+keys.Len])
	tk.Account = string(body[ticketFixedLen:])
	if tk.Key != key {
		return Ticket{}, fmt.Errorf("%w: it is for %s", ErrTicketInvalid, tk.Key)
	}
	if now.After(tk.Expires.Add(TicketSkew)) {
		return tk, fmt.Errorf("%w at %s (%s ago)", ErrTicketExpired, tk.Expires.UTC().Format(time.RFC3339), now.Sub(tk.Expires).Round(time.Second))
	}
	return tk, nil
}
