package agent

import (
	"context"
	"errors"

	"go.uber.org/zap"

	controlv1 "meshd/api/control/v1"
	"meshd/internal/keys"
)

// ErrNeedsLogin means control wants a setup key before this peer may join
// (a new peer, an expired login, or a peer an admin deleted). The Control
// adapter wraps the client's own sentinel errors in it.
var ErrNeedsLogin = errors.New("control wants a setup key: run `meshd up --setup-key KEY`")

// ErrLoginExpired means control cut the peer off because its login expired
// (it also wraps ErrNeedsLogin). An admin can lift that without touching
// the machine (expiration off, or the peer exempted), so the engine keeps
// asking, quietly, until it may log in again.
var ErrLoginExpired = errors.New("login expired")

// ErrRefused means control refused the login for good (a bad, expired or
// used setup key); retrying the same key will not help.
var ErrRefused = errors.New("control refused the login")

// Server states, as status shows them.
const (
	StateConnected    = "connected"
	StateConnecting   = "connecting"
	StateDisconnected = "disconnected"
)

// ServerStatus is where a connection to control or signal stands.
type ServerStatus struct {
	URL   string
	State string // StateConnected, StateConnecting or StateDisconnected
	Error string
}

// Control is what the engine needs from a control client
// (internal/controlclient). Sync reconnects by itself, with backoff and
// jitter, and drops maps older than the newest it delivered.
type Control interface {
	// Login logs the peer in; setupKey may be empty for a known peer.
	// Errors wrap ErrNeedsLogin or ErrRefused when control refused.
	Login(ctx context.Context, setupKey string) (*controlv1.SelfConfig, error)
	// Sync delivers network maps until ctx ends.
	Sync(ctx context.Context, onMap func(*controlv1.NetworkMap)) error
	Status() ServerStatus
}

// Signal is what the engine needs from a signal client
// (internal/signalclient): sealed messages to and from peers.
type Signal interface {
	// Run keeps the stream to signal until ctx ends.
	Run(ctx context.Context) error
	// OnMessage sets the handler of opened messages (one goroutine, in order).
	OnMessage(func(from keys.Key, payload []byte))
	// WaitConnected blocks until registered or ctx ends.
	WaitConnected(ctx context.Context) error
	// Send seals payload for to and returns signal's answer; an error wraps
	// ErrPeerOffline when the peer has no stream.
	Send(ctx context.Context, to keys.Key, payload []byte) error
	Status() ServerStatus
}

// ErrPeerOffline is what Signal.Send errors wrap when the recipient is not
// connected to signal.
var ErrPeerOffline = errors.New("peer is not connected to signal")

// ControlConfig is what a Control is made from.
type ControlConfig struct {
	URL, Pin string
	// URLs are the other control replicas, tried when URL fails.
	URLs    []string
	Private keys.Private
	Meta    *controlv1.PeerMeta
	Log     *zap.Logger
}

// SignalConfig is what a Signal is made from.
type SignalConfig struct {
	URL, Pin string
	Private  keys.Private
	Log      *zap.Logger
	// Ticket returns control's newest signal ticket for this peer.
	Ticket func() []byte
}

// Clients makes the engine's control and signal clients; roles/agent passes
// the real ones (see clients_real.go), tests may pass fakes.
type Clients struct {
	Control func(ControlConfig) (Control, error)
	Signal  func(SignalConfig) (Signal, error)
}
