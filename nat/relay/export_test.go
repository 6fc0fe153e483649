package relay

// CheckNow runs one check of the live allocations, as the loop does every
// Options.RevokeCheck.
func (s *Server) CheckNow() { s.check() }
