package control

import (
	"context"
	"encoding/json"
	"time"

	"go.uber.org/zap"

	"meshd/internal/cluster"
	"meshd/internal/netmap"
	"meshd/store"
)

// Replicas share one store and keep each account's state in memory. A
// replica that commits a change publishes a small message saying which
// account changed and how (the netmap.Change); the others reload that
// account from the store and send the affected maps on their streams,
// through the same coalescing distributor as their own changes.

// busChannel carries control's messages between replicas.
const busChannel = "control"

// Kinds of bus messages: what the receivers reload.
const (
	kindAccount  = "account"  // the account's entities
	kindTokens   = "tokens"   // the admin tokens
	kindPresence = "presence" // peers' streams opened or closed on the origin
)

// busMsg is one published change.
type busMsg struct {
	Account string        `json:"a,omitempty"`
	Origin  string        `json:"o"`
	Kind    string        `json:"k"`
	Change  netmap.Change `json:"c"`
	// Seen: for presence, when peers that went offline were last seen
	// (Unix nanoseconds), so that every replica ages ephemeral peers alike.
	Seen map[string]int64 `json:"s,omitempty"`
}

// publishTimeout bounds a publish: a change is committed already, and a
// lost message only delays the other replicas until they resync.
const publishTimeout = 5 * time.Second

// publish tells the other replicas about a committed change.
func (s *Service) publish(m busMsg) {
	m.Origin = s.cl.Self()
	b, err := json.Marshal(m)
	if err == nil && len(b) > cluster.MaxPayload {
		// Too many ids to name: every map may change.
		m.Change, m.Seen = netmap.Change{All: true}, nil
		b, err = json.Marshal(m)
	}
	if err != nil {
		s.log.Error("encode change for the other replicas", zap.Error(err))
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(s.ctx), publishTimeout)
	defer cancel()
	if err := s.cl.Publish(ctx, busChannel, b); err != nil {
		s.faultLog(s.log, err)("publish change to the other replicas", zap.String("kind", m.Kind), zap.Error(err))
	}
}

// maxBatch bounds how many waiting messages are handled in one go.
const maxBatch = 256

// reloadGap is the least time between two rounds of reloads. Each change
// on another replica loads the whole account here: without a gap, a
// stream of small changes (a peer logging in again and again) keeps every
// other replica loading its account back to back. Changes published during
// the gap are merged into the next round.
const reloadGap = 100 * time.Millisecond

// follow applies what the other replicas publish until ctx ends. Messages
// that arrive while it works are handled together: an account changed many
// times is loaded once. After a round that reloaded accounts it waits
// reloadGap, or as long as the round took if longer, so that reloads take
// at most half of the time however fast changes come.
func (s *Service) follow(ctx context.Context, msgs <-chan []byte) {
	for {
		var batch [][]byte
		select {
		case <-ctx.Done():
			return
		case b, ok := <-msgs:
			if !ok {
				return
			}
			batch = append(batch, b)
		}
	more:
		for len(batch) < maxBatch {
			select {
			case b, ok := <-msgs:
				if !ok {
					break more
				}
				batch = append(batch, b)
			default:
				break more
			}
		}
		start := time.Now()
		if !s.receive(ctx, batch) {
			continue
		}
		t := time.NewTimer(max(reloadGap, time.Since(start)))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// receive applies a batch of messages and reports whether it loaded
// anything from the store.
func (s *Service) receive(ctx context.Context, batch [][]byte) bool {
	changes := map[string]*netmap.Change{}
	var order []string
	var presence []busMsg
	tokens := false
	for _, b := range batch {
		var m busMsg
		if b == nil || json.Unmarshal(b, &m) != nil {
			// Messages were lost: take everything from the store again.
			s.resyncAll(ctx)
			return true
		}
		if m.Origin == s.cl.Self() {
			continue
		}
		switch m.Kind {
		case kindTokens:
			tokens = true
		case kindPresence:
			presence = append(presence, m)
		case kindAccount:
			c := changes[m.Account]
			if c == nil {
				c = &netmap.Change{}
				changes[m.Account] = c
				order = append(order, m.Account)
			}
			c.Merge(m.Change)
		}
	}
	if tokens {
		s.reloadTokens(ctx)
	}
	for _, id := range order {
		s.reload(ctx, id, *changes[id])
	}
	for _, m := range presence {
		s.applyPresence(ctx, m)
	}
	return tokens || len(order) > 0
}

// account returns the account with id, nil when this replica has not
// loaded it.
func (s *Service) account(id string) *account {
	for _, a := range s.accountList() {
		if a.id == id {
			return a
		}
	}
	return nil
}

// reload takes an account's entities from the store again, after another
// replica changed them, and distributes change with what the reload found
// changed (see diff). An account this replica
// did not know yet (made by another replica) starts here.
func (s *Service) reload(ctx context.Context, id string, c netmap.Change) error {
	a := s.account(id)
	if a == nil {
		d, err := s.st.LoadAccount(ctx, id)
		if err != nil {
			s.faultLog(s.log, err)("load account made by another replica", zap.String("account", id), zap.Error(err))
			return err
		}
		s.mu.Lock()
		if s.accountLocked(id) != nil {
			s.mu.Unlock()
			return nil // loaded meanwhile
		}
		a, err = newAccount(s, d)
		if err == nil {
			_, err = a.reloadSSO(ctx)
		}
		if err != nil {
			s.mu.Unlock()
			s.fault(err)
			s.log.Error("load account made by another replica", zap.String("account", id), zap.Error(err))
			return err
		}
		s.accounts = append(s.accounts, a)
		s.mu.Unlock()
		s.start(a)
		return nil
	}
	// Loading under mu keeps this replica's own commits from slipping
	// between the load and its use: they would be lost from memory.
	a.mu.Lock()
	defer a.mu.Unlock()
	d, err := s.st.LoadAccount(ctx, id)
	if err != nil {
		s.faultLog(a.log, err)("reload account changed by another replica", zap.Error(err))
		return err
	}
	diff, err := a.fill(d)
	if err != nil {
		a.log.Error("reload account changed by another replica", zap.Error(err))
		return err
	}
	c.Merge(diff)
	users, err := a.reloadSSO(ctx)
	if err != nil {
		s.faultLog(a.log, err)("reload users changed by another replica", zap.Error(err))
		return err
	}
	c.Merge(users)
	for _, pid := range a.dist.connected() {
		if a.peers[pid] == nil {
			a.dist.kick(pid, refusePeerUnknown.err("deleted"))
		}
	}
	a.change(c)
	return nil
}

func (s *Service) accountLocked(id string) *account {
	for _, a := range s.accounts {
		if a.id == id {
			return a
		}
	}
	return nil
}

// resyncAll reloads every account, the admin tokens and who is online: after
// lost messages, or when the database is back.
func (s *Service) resyncAll(ctx context.Context) error {
	accts, err := s.st.Accounts(ctx)
	if err != nil {
		s.faultLog(s.log, err)("resync from the store", zap.Error(err))
		return err
	}
	for _, acct := range accts {
		if err := s.reload(ctx, acct.ID, netmap.Change{All: true}); err != nil {
			return err
		}
	}
	if err := s.reloadTokens(ctx); err != nil {
		return err
	}
	s.resyncPresence(ctx)
	return nil
}

// reloadTokens takes the admin tokens from the store again.
func (s *Service) reloadTokens(ctx context.Context) error {
	toks, err := s.st.AdminTokens(ctx)
	if err != nil {
		s.faultLog(s.log, err)("reload admin tokens", zap.Error(err))
		return err
	}
	m := make(map[string]*store.AdminToken, len(toks))
	for i := range toks {
		m[string(toks[i].Hash)] = &toks[i]
	}
	s.mu.Lock()
	s.tokens = m
	s.mu.Unlock()
	return nil
}
