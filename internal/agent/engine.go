// Package agent is the engine of `meshd agent`: it logs in to control with
// the machine's WireGuard key, keeps the network map in sync, and turns each
// map into WireGuard peers and paths (design steps 1–6). For every remote
// peer a worker runs ICE sessions (nat/peerconn) through signal and lets the
// path machine (internal/agent/path) choose between a direct and a relayed
// path; the firewall rules of the map become an internal/filter Filter.
//
// The engine outlives the tunnel: `meshd down` (Engine.Down) stops the
// tunnel and removes the interface but keeps the identity and the daemon
// socket; `meshd up` brings it back. roles/agent wires it, and
// internal/daemon serves its Status, Up and Down on the local socket.
package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"slices"
	"sync"
	"time"

	"github.com/pion/transport/v3"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	controlv1 "meshd/api/control/v1"
	daemonv1 "meshd/api/daemon/v1"
	peerv1 "meshd/api/peer/v1"
	"meshd/internal/agent/path"
	"meshd/internal/filter"
	"meshd/internal/keys"
	"meshd/internal/proxy"
	"meshd/internal/version"
	"meshd/nat/peerconn"
	"meshd/wg"
)

// Options configure an Engine.
type Options struct {
	// StateDir keeps the key and the saved state (mode 0700/0600).
	StateDir string
	// ControlURL and Pin override the saved ones (from --control/--join).
	ControlURL, Pin string
	// ControlURLs are the other control replicas a join token names; with
	// ControlURL they replace the saved list.
	ControlURLs []string
	// SetupKey is used for the first login (or when control asks again).
	SetupKey string
	// SSO: the first login (or the next, after `meshd up --sso`) is by
	// single sign-on through control (sso.go).
	SSO bool
	// SSOBrowser: SSO logins use the authorization code flow with PKCE, for
	// a browser on this machine, instead of the device flow.
	SSOBrowser bool
	Hostname   string
	// Device is the template of the WireGuard device (mode, name, port,
	// MTU); the engine fills in the key and the overlay address.
	Device wg.Config
	// NewDevice makes the device; wg.New in production.
	NewDevice func(context.Context, wg.Config) (wg.Device, error)
	// Check, when set, runs before every login with the Device template
	// (wg.Check in production): an error means this machine cannot run
	// the tunnel as configured, so it must not register a peer; Run then
	// returns the error (the process exits, and a supervisor sees it).
	Check func(context.Context, wg.Config) error
	// OnDevice, when set, is called with each new device and the packet
	// filter the engine keeps in line with the map's firewall rules (the
	// device enforces it already: it is Device.Filter unless the template
	// set another one). For tests and diagnostics.
	OnDevice func(wg.Device, *filter.Filter)
	Clients  Clients
	// Path tunes the path machine; zero fields take its defaults.
	Path path.Config
	// ICENet is pion's network for TURN and interface listing (nil: the
	// host's).
	ICENet transport.Net
	// IncludeLoopback lets ICE use loopback candidates (several agents on
	// one host in tests).
	IncludeLoopback bool
	// ICETiming tunes every ICE session (tests); nil: peerconn's defaults.
	ICETiming *peerconn.Timing
	// DNS configures the mesh resolver (on unless DNS.Disabled).
	DNS DNSOptions
	// PostQuantumOff keeps this agent out of post-quantum pre-shared key
	// exchanges (meshd agent --post-quantum=false): control tells its
	// peers, which then connect without (permissive) or not at all
	// (strict).
	PostQuantumOff bool
	// Forwards expose local services on the overlay address (netstack
	// mode only: with a TUN they listen on it themselves); see proxy.go.
	Forwards []proxy.Forward
	// PQTiming tunes the post-quantum key rotation (tests); nil: defaults.
	PQTiming *PQTiming
	Log      *zap.Logger
}

// Engine is the agent. Make it with New, run it with Run.
type Engine struct {
	opts Options
	log  *zap.Logger
	priv keys.Private
	lock *stateLock // held from New until Run returns (or Close)

	mu      sync.Mutex
	st      saved
	tun     *tunnel
	stop    context.CancelFunc
	done    chan struct{}
	lastErr error
	pending string // setup key for the next login
	// onDisk is the control URL and pin the state file keeps while a new
	// one (from --control or --join) has not logged in yet: a wrong URL is
	// not remembered for the next start.
	onDisk     [2]string
	onDiskURLs []string
	urlUnsaved bool
	started    time.Time
	ctx        context.Context
	fatal      chan error         // a tunnel that cannot run ends Run through it
	ssoPrompt  *daemonv1.SSOLogin // while an SSO login waits (sso.go)
	ssoBrowser bool               // the next SSO login uses the browser flow
}

// New loads (or creates) the identity in opts.StateDir.
func New(opts Options) (*Engine, error) {
	if opts.Log == nil {
		opts.Log = zap.NewNop()
	}
	if opts.NewDevice == nil {
		opts.NewDevice = wg.New
	}
	if opts.Clients.Control == nil || opts.Clients.Signal == nil {
		return nil, errors.New("agent: no control or signal client constructor")
	}
	priv, st, lock, err := openState(opts.StateDir)
	if err != nil {
		return nil, err
	}
	onDisk := [2]string{st.ControlURL, st.TLSPin}
	e, err := newEngine(opts, priv, st, lock, onDisk, st.ControlURLs)
	if err != nil {
		lock.release()
		return nil, err
	}
	return e, nil
}

func newEngine(opts Options, priv keys.Private, st saved, lock *stateLock, onDisk [2]string, onDiskURLs []string) (*Engine, error) {
	if opts.ControlURL != "" {
		if st.ControlURL != "" && st.ControlURL != opts.ControlURL {
			opts.Log.Warn("control url changed", zap.String("old", st.ControlURL), zap.String("new", opts.ControlURL))
		}
		urls := opts.ControlURLs
		if st.ControlURL == opts.ControlURL {
			// The same control: the replicas the last map named stay
			// known next to the token's (the next map prunes them).
			urls = append(slices.Clone(urls), st.ControlURLs...)
		}
		st.ControlURL, st.TLSPin, st.ControlURLs = opts.ControlURL, opts.Pin, dedupe(urls)
	}
	if st.ControlURL == "" {
		return nil, fmt.Errorf("agent: no control server known in %s: pass --join TOKEN or --control URL --setup-key KEY", opts.StateDir)
	}
	if opts.SSO || opts.SSOBrowser {
		opts.SetupKey = ssoKey
	}
	if !st.Joined && opts.SetupKey == "" {
		return nil, errors.New("agent: this machine has not joined yet: pass --join TOKEN or --setup-key KEY")
	}
	if opts.Hostname == "" {
		opts.Hostname, _ = os.Hostname()
	}
	e := &Engine{opts: opts, log: opts.Log, priv: priv, lock: lock, st: st, pending: opts.SetupKey, fatal: make(chan error, 1),
		onDisk: onDisk, onDiskURLs: onDiskURLs, urlUnsaved: onDisk != [2]string{st.ControlURL, st.TLSPin}}
	if err := e.saveLocked(); err != nil {
		return nil, err
	}
	return e, nil
}

// PublicKey returns the machine's WireGuard public key.
func (e *Engine) PublicKey() keys.Key { return e.priv.Public() }

// Close releases the state directory without running (Run does it when
// it returns).
func (e *Engine) Close() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.lock.release()
}

// Run runs the engine until ctx ends: the tunnel is up unless `meshd down`
// said otherwise. It returns nil when ctx ends, and an error when the
// tunnel cannot run here at all (see Options.Check); the state directory is
// unlocked then.
func (e *Engine) Run(ctx context.Context) error {
	defer e.Close()
	e.mu.Lock()
	e.ctx = ctx
	e.started = time.Now()
	want := e.st.WantRunning
	e.mu.Unlock()
	if want {
		e.startTunnel()
	}
	select {
	case <-ctx.Done():
		e.stopTunnel()
		return nil
	case err := <-e.fatal:
		e.stopTunnel()
		return err
	}
}

// Up starts the tunnel (and remembers that it should run). A setup key is
// needed only when control asks for one. It waits until the login succeeded
// or failed, or ctx ends (the tunnel keeps trying then).
func (e *Engine) Up(ctx context.Context, setupKey string) error {
	e.mu.Lock()
	if e.ctx == nil {
		e.mu.Unlock()
		return errors.New("agent: engine not running")
	}
	if setupKey != "" {
		e.pending = setupKey
	}
	e.st.WantRunning = true
	err := e.saveLocked()
	running := e.tun != nil && e.lastErr == nil
	e.mu.Unlock()
	if err != nil {
		return err
	}
	if running && setupKey == "" {
		e.log.Info("meshd up: the tunnel runs already")
		return nil
	}
	e.log.Info("meshd up: starting the tunnel", zap.Bool("new_setup_key", setupKey != ""))
	e.stopTunnel()
	e.startTunnel()
	// Wait for the login's outcome.
	for {
		e.mu.Lock()
		t, lastErr := e.tun, e.lastErr
		e.mu.Unlock()
		if lastErr != nil {
			return lastErr
		}
		if t == nil {
			return errors.New("agent: tunnel stopped")
		}
		t.mu.RLock()
		phase, msg := t.phase, t.message
		t.mu.RUnlock()
		if phase == "up" {
			return nil
		}
		if phase == "needs-login" {
			return errors.New(msg)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("agent: still connecting (%s); it keeps trying", msg)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Down stops the tunnel and removes the interface, keeping the identity; a
// restart stays down until Up.
func (e *Engine) Down(ctx context.Context) error {
	e.mu.Lock()
	e.st.WantRunning = false
	err := e.saveLocked()
	e.mu.Unlock()
	e.log.Info("meshd down: stopping the tunnel (the identity stays; `meshd up` starts it again)")
	e.stopTunnel()
	e.log.Info("tunnel down")
	return err
}

func (e *Engine) startTunnel() {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.tun != nil || e.ctx == nil || e.ctx.Err() != nil {
		return
	}
	t := newTunnel(e)
	ctx, cancel := context.WithCancel(e.ctx)
	done := make(chan struct{})
	e.tun, e.stop, e.done, e.lastErr = t, cancel, done, nil
	key := e.pending
	go func() {
		defer close(done)
		expiredLogged := false
		for {
			err := t.run(ctx, key)
			if errors.Is(err, errRestart) && ctx.Err() == nil {
				t = newTunnel(e)
				e.mu.Lock()
				e.tun = t
				e.mu.Unlock()
				continue
			}
			if errors.Is(err, ErrLoginExpired) && ctx.Err() == nil {
				// Said once; then ask again now and then, quietly: an
				// admin may exempt this peer or turn expiration off.
				if !expiredLogged {
					e.log.Error("control cut this machine off; asking again every "+loginExpiredRetry.String(), zap.Error(err))
					expiredLogged = true
				}
				e.mu.Lock()
				e.lastErr = err // status: needs-login, with control's message
				e.mu.Unlock()
				select {
				case <-ctx.Done():
					return
				case <-time.After(loginExpiredRetry):
				}
				t = newTunnel(e)
				t.setPhase("needs-login", err.Error())
				e.mu.Lock()
				e.tun = t
				e.mu.Unlock()
				key = ""
				continue
			}
			if err != nil && ctx.Err() == nil {
				e.mu.Lock()
				e.lastErr = err
				e.mu.Unlock()
				var f *fatalError
				if errors.As(err, &f) {
					e.log.Error("cannot run; stopping the agent", zap.Error(f.err))
					select {
					case e.fatal <- f.err:
					default:
					}
					return
				}
				e.log.Error("tunnel stopped", zap.Error(err))
			}
			return
		}
	}()
}

// loginExpiredRetry is how often a peer whose login expired asks control
// whether it may log in again.
var loginExpiredRetry = time.Minute

// fatalError is a tunnel error no retry or new setup key can fix: the
// machine cannot run the tunnel as configured.
type fatalError struct{ err error }

func (f *fatalError) Error() string { return f.err.Error() }
func (f *fatalError) Unwrap() error { return f.err }

func (e *Engine) stopTunnel() {
	e.mu.Lock()
	stop, done := e.stop, e.done
	e.tun, e.stop, e.done = nil, nil, nil
	e.mu.Unlock()
	if stop != nil {
		stop()
		<-done
	}
}

// saveLocked writes the state, with the control URL and pin of the last
// successful login while a new one is untried. Callers hold mu.
func (e *Engine) saveLocked() error {
	st := e.st
	if e.urlUnsaved {
		st.ControlURL, st.TLSPin, st.ControlURLs = e.onDisk[0], e.onDisk[1], e.onDiskURLs
	}
	return st.save(e.opts.StateDir)
}

// loggedIn records a successful login.
func (e *Engine) loggedIn(self *controlv1.SelfConfig) {
	e.mu.Lock()
	defer e.mu.Unlock()
	changed := !e.st.Joined || e.st.OverlayIP != self.GetOverlayIp() || e.st.Name != self.GetName() ||
		e.st.DNSName != self.GetDnsName() || e.urlUnsaved
	e.urlUnsaved = false // control answered there: keep it
	e.st.Joined = true
	e.pending = ""
	e.lastErr = nil
	e.st.Name, e.st.DNSName, e.st.OverlayIP = self.GetName(), self.GetDnsName(), self.GetOverlayIp()
	if changed {
		if err := e.saveLocked(); err != nil {
			e.log.Error("save state", zap.Error(err))
		}
	}
}

func (e *Engine) controlURL() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.st.ControlURL
}

func (e *Engine) controlURLs() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.st.ControlURLs)
}

// dedupe returns urls without empties and repeats (nil when none is left).
func dedupe(urls []string) []string {
	var out []string
	for _, u := range urls {
		if u != "" && !slices.Contains(out, u) {
			out = append(out, u)
		}
	}
	return out
}

// rememberControlURLs keeps the control replicas a map lists, for the next
// start; a map without the list (an older control) changes nothing.
func (e *Engine) rememberControlURLs(urls []string) {
	if len(urls) == 0 {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if slices.Equal(e.st.ControlURLs, urls) {
		return
	}
	e.st.ControlURLs = slices.Clone(urls)
	if err := e.saveLocked(); err != nil {
		e.log.Error("save state", zap.Error(err))
	}
}

func (e *Engine) controlPin() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.st.TLSPin
}

func (e *Engine) meta() *controlv1.PeerMeta {
	return &controlv1.PeerMeta{Hostname: e.opts.Hostname, Os: runtime.GOOS, Version: version.String(), PostQuantum: !e.opts.PostQuantumOff}
}

// unmarshalPeer reads a peer message; unknown fields are kept aside by
// protobuf and ignored.
func unmarshalPeer(b []byte) (*peerv1.Message, error) {
	m := new(peerv1.Message)
	if err := proto.Unmarshal(b, m); err != nil {
		return nil, err
	}
	return m, nil
}

// Device returns the current WireGuard device (nil while the tunnel is down
// or not up yet). In netstack mode its Net is how programs reach the mesh.
func (e *Engine) Device() wg.Device {
	e.mu.Lock()
	t := e.tun
	e.mu.Unlock()
	if t == nil {
		return nil
	}
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.dev
}
