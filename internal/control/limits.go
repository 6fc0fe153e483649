package control

import (
	"context"
	"net/http"

	"connectrpc.com/connect"
)

// Read limits of one request message, after decompression. Peer requests
// carry a proof and a peer's metadata (maps go the other way, control to
// agent); admin requests carry one object of an admin's. Both are far
// below these.
const (
	peerReadMaxBytes  = 256 << 10
	adminReadMaxBytes = 1 << 20
)

// authenticateFirst checks an admin call's bearer token before its body is
// read, so that a caller without a token costs a header lookup, not the
// decoding of whatever body it sent. The caller it finds rides in the
// request context for adminAuth.
func (s *Service) authenticateFirst(h http.Handler) http.Handler {
	ew := connect.NewErrorWriter()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := s.authenticate(r.Context(), r.Header.Get("Authorization"))
		if err != nil {
			_ = ew.Write(w, r, err)
			return
		}
		h.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), callerKey{}, c)))
	})
}
