package control

// Roles on the admin API, enforced here for every method so that no handler
// can forget: owners and admins may call everything, auditors every read
// (List*, Get*, CheckAccess), users only the peer methods and only on their
// own peers (ListPeers shows just those; an update may only rename).

import (
	"context"
	"errors"
	"strings"

	"connectrpc.com/connect"

	adminv1 "meshd/api/admin/v1"
	"meshd/store"
)

// readMethod reports whether an admin method only reads. CheckAccess
// answers from the compiled rules and changes nothing.
func readMethod(method string) bool {
	return strings.HasPrefix(method, "List") || strings.HasPrefix(method, "Get") || method == "CheckAccess"
}

// userMethods are what the user role may call (on its own peers).
var userMethods = map[string]bool{"ListPeers": true, "GetPeer": true, "UpdatePeer": true, "DeletePeer": true}

func denied(role, method, what string) error {
	return connect.NewError(connect.CodePermissionDenied, errors.New("role "+role+" may not call "+method+": "+what))
}

// authorized runs next when the caller's role allows the call.
func authorized(ctx context.Context, c *caller, req connect.AnyRequest, next connect.UnaryFunc) (connect.AnyResponse, error) {
	proc := req.Spec().Procedure
	method := proc[strings.LastIndexByte(proc, '/')+1:]
	switch c.role {
	case store.RoleOwner, store.RoleAdmin:
		return next(ctx, req)
	case store.RoleAuditor:
		if !readMethod(method) {
			return nil, denied(c.role, method, "auditors only read")
		}
		return next(ctx, req)
	case store.RoleUser:
		if !userMethods[method] {
			return nil, denied(c.role, method, "users manage only their own peers")
		}
		if err := c.ownsPeerOf(req.Any()); err != nil {
			return nil, err
		}
		res, err := next(ctx, req)
		if err == nil && method == "ListPeers" {
			if l, ok := res.Any().(*adminv1.ListPeersResponse); ok {
				own := l.Peers[:0]
				for _, p := range l.Peers {
					if p.UserId == c.userID {
						own = append(own, p)
					}
				}
				l.Peers = own
			}
		}
		return res, err
	}
	return nil, denied(c.role, method, "unknown role")
}

// ownsPeerOf checks that a user-role request names one of the caller's
// own peers and, for updates, changes only the name.
func (c *caller) ownsPeerOf(msg any) error {
	var ref string
	switch m := msg.(type) {
	case *adminv1.ListPeersRequest:
		return nil
	case *adminv1.GetPeerRequest:
		ref = m.Id
	case *adminv1.DeletePeerRequest:
		ref = m.Id
	case *adminv1.UpdatePeerRequest:
		if m.Groups != nil || m.LoginExpirationEnabled != nil {
			return denied(c.role, "UpdatePeer", "users may only rename their peers")
		}
		ref = m.Id
	default:
		return denied(c.role, "this method", "users manage only their own peers")
	}
	c.a.mu.Lock()
	defer c.a.mu.Unlock()
	p, err := c.a.peerRef(ref)
	if err != nil {
		return adminError(err)
	}
	if c.a.sso.peerUser[p.ID] != c.userID {
		return adminError(notFoundf("no peer %q of yours: see `meshd admin peers list`", ref))
	}
	return nil
}
