package control

import (
	"net/http"

	"connectrpc.com/connect"

	"meshd/api/admin/v1/adminv1connect"
	"meshd/internal/server"
)

// AdminHandler returns the admin service as Mount serves it (its path and
// handler, behind the same token check), for an in-process client such as
// the dashboard: it then has no other way in than a token's.
func (s *Service) AdminHandler() (string, http.Handler) {
	path, h := adminv1connect.NewAdminServiceHandler(&adminAPI{s},
		server.ReadLimit(adminReadMaxBytes, nil), connect.WithInterceptors(&adminAuth{s}))
	return path, s.authenticateFirst(h)
}
