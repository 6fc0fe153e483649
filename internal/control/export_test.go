package control_test

import (
	"errors"

	"connectrpc.com/connect"

	controlv1 "meshd/api/control/v1"
	"meshd/internal/controlclient"
)

// controlclientRefused maps a raw Connect refusal to controlclient's error,
// as controlclient does, for tests that call the RPCs directly.
func controlclientRefused(err error) error {
	var ce *connect.Error
	if !errors.As(err, &ce) {
		return err
	}
	for _, d := range ce.Details() {
		if v, e := d.Value(); e == nil {
			if ed, ok := v.(*controlv1.ErrorDetail); ok && ed.Reason == controlv1.Reason_REASON_PROOF_FAILED {
				return controlclient.ErrProofFailed
			}
		}
	}
	return err
}
