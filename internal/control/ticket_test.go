package control_test

import (
	"testing"
	"time"

	"meshd/internal/control"
	"meshd/internal/control/controltest"
	"meshd/internal/seal"
)

// Every map carries a ticket for the agent's key that control's ticket key
// verifies, and maps are refreshed before it expires. The key outlives a
// restart: a separate signal keeps the --control-key it was given.
func TestMapsCarryFreshSignalTickets(t *testing.T) {
	h := controltest.NewHarness(t, 1, controltest.WithOptions(func(o *control.Options) { o.TicketTTL = 2 * time.Second }))
	a := h.Agents[0]
	key := h.Service.TicketKey()
	m := a.WaitFor(t, "a map", func(m *controltest.Map) bool { return len(m.GetSignalTicket()) > 0 })
	first, err := seal.VerifyTicket(key, m.GetSignalTicket(), a.Key.Public(), h.Clock.Now())
	if err != nil {
		t.Fatalf("the map's ticket: %v", err)
	}
	if first.Account == "" {
		t.Fatal("the ticket names no account")
	}
	// Refreshed with a fifth of the lifetime left (1.6 s here).
	h.Clock.Advance(time.Second)
	a.WaitFor(t, "a map with a newer ticket", func(m *controltest.Map) bool {
		tk, err := seal.VerifyTicket(key, m.GetSignalTicket(), a.Key.Public(), h.Clock.Now())
		return err == nil && tk.Expires.After(first.Expires)
	})

	h.Restart()
	if got := h.Service.TicketKey(); !got.Equal(key) {
		t.Fatal("the ticket key changed across a restart")
	}
}
