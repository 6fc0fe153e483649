package control

// TURNUserValid reports whether the peer a TURN credential was issued to
// (its id, the part after ':' in the username) may still use the relays:
// it exists and its login has not expired. A relay in the same process
// (`meshd all`) asks it on every TURN request and for its live
// allocations, so a deleted or expired peer loses the relay at once
// rather than when its credential expires.
func (s *Service) TURNUserValid(peerID string) bool {
	now := s.now()
	for _, a := range s.accountList() {
		a.mu.Lock()
		p := a.peers[peerID]
		expired := p != nil && a.loginExpired(p, now)
		a.mu.Unlock()
		if p != nil {
			return !expired
		}
	}
	return false
}
