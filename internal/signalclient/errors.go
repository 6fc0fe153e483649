package signalclient

import (
	"errors"
	"fmt"
	"time"

	signalv1 "meshd/api/signal/v1"
	"meshd/internal/keys"
)

// Conditions Send reports; test them with errors.Is. A refused envelope is a
// *DeliveryError that wraps one of the first five.
var (
	// ErrNotConnected: the recipient has no stream on signal (it is offline
	// or reconnecting).
	ErrNotConnected = errors.New("signal: peer is not connected")
	// ErrTooLarge: the sealed payload exceeds signal's limit.
	ErrTooLarge = errors.New("signal: message too large")
	// ErrRateLimited: this peer sent more than its rate; see RetryAfter.
	ErrRateLimited = errors.New("signal: rate limited")
	// ErrQueueFull: the recipient is not reading fast enough.
	ErrQueueFull = errors.New("signal: recipient's queue is full")
	// ErrInvalid: signal found the envelope malformed (a bug in the sender).
	ErrInvalid = errors.New("signal: envelope refused as malformed")
	// ErrDisconnected: this client has no registered stream right now (or
	// lost it before the answer came); Run is reconnecting.
	ErrDisconnected = errors.New("signal: not connected to the signal server")
	// ErrReplaced: the server ended the stream because another stream
	// registered the same key (two processes share a key?).
	ErrReplaced = errors.New("signal: stream replaced by another one with the same key")
	// ErrHeartbeat: nothing arrived from the server for several heartbeat
	// intervals, so the client dropped the stream.
	ErrHeartbeat = errors.New("signal: server stopped answering (no heartbeat)")
	// ErrRefused: signal refused to register this peer (its ticket from
	// control is missing, invalid or expired); the error says which. Run
	// keeps retrying with the newest ticket.
	ErrRefused = errors.New("signal refused registration")
)

// DeliveryError is signal's refusal of one envelope.
type DeliveryError struct {
	To         keys.Key
	Status     signalv1.DeliveryStatus
	Message    string        // signal's explanation
	RetryAfter time.Duration // for ErrRateLimited
}

func (e *DeliveryError) Error() string {
	msg := fmt.Sprintf("signal: send to %s: %s", e.To, statusText(e.Status))
	if e.Message != "" {
		msg += ": " + e.Message
	}
	return msg
}

// Unwrap returns the sentinel for the status, so errors.Is works.
func (e *DeliveryError) Unwrap() error { return sentinel(e.Status) }

func sentinel(s signalv1.DeliveryStatus) error {
	switch s {
	case signalv1.DeliveryStatus_DELIVERY_STATUS_NOT_CONNECTED:
		return ErrNotConnected
	case signalv1.DeliveryStatus_DELIVERY_STATUS_TOO_LARGE:
		return ErrTooLarge
	case signalv1.DeliveryStatus_DELIVERY_STATUS_RATE_LIMITED:
		return ErrRateLimited
	case signalv1.DeliveryStatus_DELIVERY_STATUS_QUEUE_FULL:
		return ErrQueueFull
	default:
		return ErrInvalid
	}
}

func statusText(s signalv1.DeliveryStatus) string {
	switch s {
	case signalv1.DeliveryStatus_DELIVERY_STATUS_NOT_CONNECTED:
		return "peer not connected"
	case signalv1.DeliveryStatus_DELIVERY_STATUS_TOO_LARGE:
		return "too large"
	case signalv1.DeliveryStatus_DELIVERY_STATUS_RATE_LIMITED:
		return "rate limited"
	case signalv1.DeliveryStatus_DELIVERY_STATUS_QUEUE_FULL:
		return "queue full"
	case signalv1.DeliveryStatus_DELIVERY_STATUS_INVALID:
		return "invalid envelope"
	default:
		return "refused (" + s.String() + ")"
	}
}

// deliveryResult turns a Delivery answer into Send's result.
func deliveryResult(to keys.Key, d *signalv1.Delivery) error {
	if d.Status == signalv1.DeliveryStatus_DELIVERY_STATUS_QUEUED {
		return nil
	}
	return &DeliveryError{
		To:         to,
		Status:     d.Status,
		Message:    d.Message,
		RetryAfter: time.Duration(d.RetryAfterMs) * time.Millisecond,
	}
}
