package controlclient

import (
	"errors"
	"fmt"

	"connectrpc.com/connect"

	controlv1 "meshd/api/control/v1"
)

// Refusals by control. Errors returned by Login and Sync wrap one of these
// (test with errors.Is); their message is control's, meant for the user
// ("login expired: run meshd up --setup-key KEY").
var (
	// ErrLoginExpired: the peer must log in again with a setup key.
	ErrLoginExpired = errors.New("login expired")
	// ErrSetupKeyInvalid is wrapped by every setup-key refusal below.
	ErrSetupKeyInvalid = errors.New("setup key invalid")
	ErrSetupKeyUnknown = fmt.Errorf("%w: unknown", ErrSetupKeyInvalid)
	ErrSetupKeyExpired = fmt.Errorf("%w: expired", ErrSetupKeyInvalid)
	ErrSetupKeyRevoked = fmt.Errorf("%w: revoked", ErrSetupKeyInvalid)
	ErrSetupKeyUsed    = fmt.Errorf("%w: one-off key already used", ErrSetupKeyInvalid)
	ErrSetupKeyLimit   = fmt.Errorf("%w: usage limit reached", ErrSetupKeyInvalid)
	// ErrProofFailed: control did not accept the proof of the private key.
	ErrProofFailed = errors.New("key proof failed")
	// ErrPeerUnknown: control does not know the peer (never joined, or
	// deleted); join again with a setup key.
	ErrPeerUnknown = errors.New("peer unknown to control")
	// ErrNetworkFull: no free overlay address.
	ErrNetworkFull = errors.New("overlay network full")
	// ErrNoHeartbeat: the stream went silent longer than the heartbeat
	// timeout; Sync reconnects.
	ErrNoHeartbeat = errors.New("no heartbeat from control")
	// ErrUserBlocked: an admin blocked the peer's user.
	ErrUserBlocked = errors.New("user blocked")
	// ErrSSOFailed: a single sign-on login did not succeed (refused,
	// provider unreachable, code expired); the message says what to do.
	ErrSSOFailed = errors.New("single sign-on failed")
)

var reasons = map[controlv1.Reason]error{
	controlv1.Reason_REASON_LOGIN_EXPIRED:     ErrLoginExpired,
	controlv1.Reason_REASON_SETUP_KEY_UNKNOWN: ErrSetupKeyUnknown,
	controlv1.Reason_REASON_SETUP_KEY_EXPIRED: ErrSetupKeyExpired,
	controlv1.Reason_REASON_SETUP_KEY_REVOKED: ErrSetupKeyRevoked,
	controlv1.Reason_REASON_SETUP_KEY_USED:    ErrSetupKeyUsed,
	controlv1.Reason_REASON_SETUP_KEY_LIMIT:   ErrSetupKeyLimit,
	controlv1.Reason_REASON_PROOF_FAILED:      ErrProofFailed,
	controlv1.Reason_REASON_PEER_UNKNOWN:      ErrPeerUnknown,
	controlv1.Reason_REASON_NETWORK_FULL:      ErrNetworkFull,
	controlv1.Reason_REASON_USER_BLOCKED:      ErrUserBlocked,
	controlv1.Reason_REASON_SSO_FAILED:        ErrSSOFailed,
}

// RefusedError is a refusal by control: a stable reason and control's
// message. It unwraps to the matching ErrX.
type RefusedError struct {
	Reason  controlv1.Reason
	Code    connect.Code
	Message string
	err     error
}

func (e *RefusedError) Error() string { return e.Message }
func (e *RefusedError) Unwrap() error { return e.err }

// refused turns a Connect error carrying a refusal reason into a
// RefusedError; other errors come back unchanged.
func refused(err error) error {
	var ce *connect.Error
	if !errors.As(err, &ce) {
		return err
	}
	for _, d := range ce.Details() {
		v, derr := d.Value()
		if derr != nil {
			continue
		}
		if ed, ok := v.(*controlv1.ErrorDetail); ok {
			if sentinel, ok := reasons[ed.Reason]; ok {
				return &RefusedError{Reason: ed.Reason, Code: ce.Code(), Message: ce.Message(), err: sentinel}
			}
		}
	}
	return err
}

// permanent reports whether retrying cannot help: the user has to act.
func permanent(err error) bool {
	return errors.Is(err, ErrPeerUnknown) || errors.Is(err, ErrLoginExpired) || errors.Is(err, ErrProofFailed) ||
		errors.Is(err, ErrSetupKeyInvalid) || errors.Is(err, ErrNetworkFull) || errors.Is(err, ErrUserBlocked)
}
