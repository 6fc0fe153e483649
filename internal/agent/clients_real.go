package agent

import (
	"context"
	"errors"
	"fmt"
	"sync"

	controlv1 "meshd/api/control/v1"
	"meshd/internal/controlclient"
	"meshd/internal/keys"
	"meshd/internal/signalclient"
)

// RealClients are the engine's clients of a real control and signal.
func RealClients() Clients {
	return Clients{Control: NewControl, Signal: NewSignal}
}

// NewControl makes a Control on internal/controlclient.
func NewControl(cfg ControlConfig) (Control, error) {
	c, err := controlclient.New(controlclient.Options{
		URL: cfg.URL, URLs: cfg.URLs, Pin: cfg.Pin, Private: cfg.Private, Log: cfg.Log,
		Meta: controlclient.Meta{Hostname: cfg.Meta.GetHostname(), OS: cfg.Meta.GetOs(), Version: cfg.Meta.GetVersion(), PostQuantum: cfg.Meta.GetPostQuantum()},
	})
	if err != nil {
		return nil, err
	}
	return &realControl{c: c}, nil
}

type realControl struct {
	c *controlclient.Client

	mu        sync.Mutex
	connected bool
	lastErr   error
}

func (r *realControl) Login(ctx context.Context, setupKey string) (*controlv1.SelfConfig, error) {
	self, err := r.c.Login(ctx, setupKey)
	if err != nil {
		r.mu.Lock()
		r.lastErr = err
		r.mu.Unlock()
		return nil, controlError(err)
	}
	return self, nil
}

func (r *realControl) Sync(ctx context.Context, onMap func(*controlv1.NetworkMap)) error {
	err := r.c.Sync(ctx, onMap, func(up bool, err error) {
		r.mu.Lock()
		r.connected = up
		if err != nil && ctx.Err() == nil {
			r.lastErr = err
		}
		r.mu.Unlock()
	})
	if ctx.Err() != nil {
		return nil
	}
	return controlError(err)
}

func (r *realControl) Status() ServerStatus {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := ServerStatus{URL: r.c.URL(), State: StateConnecting} // the replica in use
	if r.connected {
		s.State = StateConnected
	} else if r.lastErr != nil {
		s.Error = r.lastErr.Error()
	}
	return s
}

// refusalError is a refusal by control that is one of the engine's kinds
// (ErrNeedsLogin, ...). Its message is control's alone, which already says
// what to do; the kinds' own messages would repeat it.
type refusalError struct {
	err   error
	kinds []error
}

func (e *refusalError) Error() string   { return e.err.Error() }
func (e *refusalError) Unwrap() []error { return append([]error{e.err}, e.kinds...) }

// controlError maps the control client's refusals onto the engine's.
func controlError(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, controlclient.ErrLoginExpired):
		return &refusalError{err: err, kinds: []error{ErrNeedsLogin, ErrLoginExpired}}
	case errors.Is(err, controlclient.ErrPeerUnknown):
		return &refusalError{err: err, kinds: []error{ErrNeedsLogin}}
	case errors.Is(err, controlclient.ErrSetupKeyInvalid), errors.Is(err, controlclient.ErrProofFailed),
		errors.Is(err, controlclient.ErrNetworkFull), errors.Is(err, controlclient.ErrSSOFailed),
		errors.Is(err, controlclient.ErrUserBlocked):
		return fmt.Errorf("%w: %v", ErrRefused, err)
	}
	return err
}

// NewSignal makes a Signal on internal/signalclient.
func NewSignal(cfg SignalConfig) (Signal, error) {
	c, err := signalclient.New(signalclient.Options{URL: cfg.URL, Pin: cfg.Pin, Private: cfg.Private, Log: cfg.Log, Ticket: cfg.Ticket})
	if err != nil {
		return nil, err
	}
	return realSignal{c}, nil
}

type realSignal struct{ c *signalclient.Client }

func (r realSignal) Run(ctx context.Context) error           { return r.c.Run(ctx) }
func (r realSignal) OnMessage(fn func(keys.Key, []byte))     { r.c.OnMessage(fn) }
func (r realSignal) WaitConnected(ctx context.Context) error { return r.c.WaitConnected(ctx) }

func (r realSignal) Send(ctx context.Context, to keys.Key, payload []byte) error {
	err := r.c.Send(ctx, to, payload)
	if errors.Is(err, signalclient.ErrNotConnected) {
		return fmt.Errorf("%w: %v", ErrPeerOffline, err)
	}
	return err
}

func (r realSignal) Status() ServerStatus {
	st := r.c.State()
	s := ServerStatus{URL: st.URL, State: st.State.String()}
	if st.State != signalclient.Connected && st.LastError != nil {
		s.Error = st.LastError.Error()
	}
	return s
}
