package control

// SSOLoginDone reports whether the pending login of handle has its outcome
// (without collecting it), for tests that must act between the approval
// and the caller's finish.
func (s *Service) SSOLoginDone(handle string) bool {
	s.sso.mu.Lock()
	defer s.sso.mu.Unlock()
	pl := s.sso.logins[handle]
	return pl != nil && pl.done
}
