package control

import "meshd/internal/jointoken"

// controlURLs returns every control URL agents may use, this replica's
// first: the rest come from Options.ControlURLs (the replicas the store
// knows), so that a join token printed here still works when this replica
// is down.
func (s *Service) controlURLs() []string {
	urls := []string{s.opts.PublicURL}
	if s.opts.ControlURLs != nil {
		urls = append(urls, s.opts.ControlURLs()...)
	}
	return jointoken.New(urls, "", "").URLs() // without empties and repeats
}

// joinToken returns a join token for setupKey naming every control URL.
func (s *Service) joinToken(setupKey string) jointoken.Token {
	return jointoken.New(s.controlURLs(), s.opts.TLSPin, setupKey)
}
