package control

import "meshd/internal/jointoken"

// joinToken returns a join token for setupKey naming every live control
// replica's URL (this one's first), so that a token printed here still
// joins when this replica is down.
func (s *Service) joinToken(setupKey string) jointoken.Token {
	return jointoken.New(s.controlURLs(), s.opts.TLSPin, setupKey)
}
