package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"meshd/internal/keys"
)

// LockFile is the file in the state directory an agent holds a lock on
// (on Unix; elsewhere the directory is not locked).
const LockFile = "lock"

// Files in the state directory.
const (
	KeyFile   = "private.key"
	StateFile = "state.json"
)

// saved is what the agent keeps across restarts next to its key, so that a
// restart rejoins without a setup key.
type saved struct {
	ControlURL string `json:"control_url"`
	TLSPin     string `json:"tls_pin,omitempty"`
	// ControlURLs are every control replica known (from the join token,
	// then from each map), so that after a restart the agent still finds
	// control when the replica at ControlURL is down.
	ControlURLs []string `json:"control_urls,omitempty"`
	// Joined: control accepted this key once.
	Joined bool `json:"joined"`
	// WantRunning is false after `meshd down`, so a restart stays down.
	WantRunning bool `json:"want_running"`
	// The last self config, for status while control is unreachable.
	Name      string `json:"name,omitempty"`
	DNSName   string `json:"dns_name,omitempty"`
	OverlayIP string `json:"overlay_ip,omitempty"`
}

// openState makes the state directory (0700), locks it (before the key is
// read or made: two agents starting at once must not make two keys), loads
// or creates the key (0600) and reads the saved state. The caller releases
// the lock.
func openState(dir string) (_ keys.Private, _ saved, _ *stateLock, err error) {
	if dir == "" {
		return keys.Private{}, saved{}, nil, errors.New("state: no --state directory")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return keys.Private{}, saved{}, nil, fmt.Errorf("state: %w", err)
	}
	lock, err := lockState(dir)
	if err != nil {
		return keys.Private{}, saved{}, nil, err
	}
	defer func() {
		if err != nil {
			lock.release()
		}
	}()
	priv, s, err := readState(dir)
	return priv, s, lock, err
}

func readState(dir string) (keys.Private, saved, error) {
	priv, _, err := keys.LoadOrCreate(filepath.Join(dir, KeyFile))
	if err != nil {
		return keys.Private{}, saved{}, err
	}
	s := saved{WantRunning: true}
	b, err := os.ReadFile(filepath.Join(dir, StateFile))
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return keys.Private{}, saved{}, fmt.Errorf("state: %w", err)
	default:
		if err := json.Unmarshal(b, &s); err != nil {
			return keys.Private{}, saved{}, fmt.Errorf("state: %s is not valid (%v); fix or remove it (the key in %s is the identity and stays)", filepath.Join(dir, StateFile), err, KeyFile)
		}
	}
	return priv, s, nil
}

// save writes the state atomically (0600).
func (s saved) save(dir string) error {
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, StateFile+".*")
	if err != nil {
		return fmt.Errorf("state: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("state: %w", err)
	}
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return fmt.Errorf("state: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("state: %w", err)
	}
	if err := os.Rename(tmp.Name(), filepath.Join(dir, StateFile)); err != nil {
		return fmt.Errorf("state: %w", err)
	}
	return nil
}
