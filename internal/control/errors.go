package control

import (
	"errors"
	"fmt"
	"strings"

	"connectrpc.com/connect"

	controlv1 "meshd/api/control/v1"
	"meshd/internal/cluster"
	"meshd/store"
)

// Kinds of admin errors; the handler edge maps them to Connect codes.
var (
	// ErrNotFound: no such peer, group, key, policy, route or record.
	ErrNotFound = errors.New("not found")
	// ErrInvalid: the request is malformed (bad CIDR, port, name, ...).
	ErrInvalid = errors.New("invalid argument")
	// ErrConflict: the request contradicts the account's state (a name in
	// use, a group still referenced, ...).
	ErrConflict = errors.New("conflict")
)

// kindError is an error of one of the kinds above whose message is meant
// for the admin as it is.
type kindError struct {
	kind error
	msg  string
}

func (e *kindError) Error() string { return e.msg }
func (e *kindError) Unwrap() error { return e.kind }

func notFoundf(format string, args ...any) error {
	return &kindError{ErrNotFound, fmt.Sprintf(format, args...)}
}

func invalidf(format string, args ...any) error {
	return &kindError{ErrInvalid, fmt.Sprintf(format, args...)}
}

func conflictf(format string, args ...any) error {
	return &kindError{ErrConflict, fmt.Sprintf(format, args...)}
}

// adminError maps an error to the Connect error an admin client sees.
func adminError(err error) error {
	var ce *connect.Error
	switch {
	case err == nil:
		return nil
	case errors.As(err, &ce):
		return ce
	case errors.Is(err, cluster.ErrUnavailable):
		return connect.NewError(connect.CodeUnavailable, err)
	case errors.Is(err, ErrNotFound), errors.Is(err, store.ErrNotFound):
		return connect.NewError(connect.CodeNotFound, err)
	case errors.Is(err, ErrInvalid):
		return connect.NewError(connect.CodeInvalidArgument, err)
	case errors.Is(err, ErrConflict):
		return connect.NewError(connect.CodeFailedPrecondition, err)
	}
	return connect.NewError(connect.CodeInternal, err)
}

// refusal is why a peer's call was refused: a stable reason (sent as an
// error detail), a Connect code and a message an agent can show as is.
type refusal struct {
	reason controlv1.Reason
	code   connect.Code
	// msg is "what: what to do"; a detail goes after "what".
	msg string
	// detail is said when err is given none.
	detail string
}

var (
	refuseLoginExpired = refusal{controlv1.Reason_REASON_LOGIN_EXPIRED, connect.CodeUnauthenticated,
		"login expired: run meshd up --setup-key KEY, or have an admin exempt this peer (meshd admin peers update PEER --login-expiration off)", ""}
	refuseKeyUnknown = refusal{controlv1.Reason_REASON_SETUP_KEY_UNKNOWN, connect.CodePermissionDenied,
		"setup key not accepted: no such key; check it, or create one with `meshd admin setup-keys create`", ""}
	refuseKeyExpired = refusal{controlv1.Reason_REASON_SETUP_KEY_EXPIRED, connect.CodePermissionDenied,
		"setup key expired: create a new one with `meshd admin setup-keys create`", ""}
	refuseKeyRevoked = refusal{controlv1.Reason_REASON_SETUP_KEY_REVOKED, connect.CodePermissionDenied,
		"setup key revoked: create a new one with `meshd admin setup-keys create`", ""}
	refuseKeyUsed = refusal{controlv1.Reason_REASON_SETUP_KEY_USED, connect.CodePermissionDenied,
		"setup key already used: it was a one-off key; create a new one with `meshd admin setup-keys create`", ""}
	refuseKeyLimit = refusal{controlv1.Reason_REASON_SETUP_KEY_LIMIT, connect.CodePermissionDenied,
		"setup key reached its usage limit: raise it or create a new key with `meshd admin setup-keys create`", ""}
	refuseProof = refusal{controlv1.Reason_REASON_PROOF_FAILED, connect.CodeUnauthenticated,
		"key proof failed", ""}
	refusePeerUnknown = refusal{controlv1.Reason_REASON_PEER_UNKNOWN, connect.CodeNotFound,
		"peer not registered: run meshd up --setup-key KEY", "never joined, or deleted by an admin"}
	refuseNetworkFull = refusal{controlv1.Reason_REASON_NETWORK_FULL, connect.CodeResourceExhausted,
		"no free address left in the overlay network: widen it with `meshd admin account update --overlay-network CIDR`", ""}
)

func (r refusal) Error() string { return r.msg }

// err returns the refusal as a Connect error, detail (or the refusal's
// own) in parentheses after what happened: "setup key revoked (key
// "laptops"): create a new one ...".
func (r refusal) err(detail string) *connect.Error {
	msg := r.msg
	if detail == "" {
		detail = r.detail
	}
	if detail != "" {
		if what, todo, ok := strings.Cut(msg, ": "); ok {
			msg = what + " (" + detail + "): " + todo
		} else {
			msg += " (" + detail + ")"
		}
	}
	e := connect.NewError(r.code, errors.New(msg))
	if d, err := connect.NewErrorDetail(&controlv1.ErrorDetail{Reason: r.reason}); err == nil {
		e.AddDetail(d)
	}
	return e
}

// peerError maps a failed change of a peer's call: a lost database is
// Unavailable (the agent retries), anything else Internal.
func peerError(err error) error {
	if errors.Is(err, cluster.ErrUnavailable) {
		return connect.NewError(connect.CodeUnavailable, err)
	}
	return connect.NewError(connect.CodeInternal, err)
}
