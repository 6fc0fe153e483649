//go:build unix

package agent

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// stateLock is an exclusive lock on a state directory. Two agents on one
// directory would log in with the same key and take each other's sessions
// (control keeps one per key), each knocking the other off in turn; the
// lock makes the second one stop at once instead. The kernel drops the
// lock when the process dies, so a crash never leaves the directory locked.
type stateLock struct{ f *os.File }

// lockState takes the lock on dir, or says which process holds it.
func lockState(dir string) (*stateLock, error) {
	name := filepath.Join(dir, LockFile)
	f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("state: lock: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		b, _ := os.ReadFile(name)
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			holder := "another process"
			if pid, perr := strconv.Atoi(strings.TrimSpace(string(b))); perr == nil && pid > 0 {
				holder = fmt.Sprintf("another agent (pid %d)", pid)
			}
			return nil, fmt.Errorf("state: %s is in use by %s, which holds %s: give each agent its own --state (and --iface, --socket), or stop the other one", dir, holder, name)
		}
		return nil, fmt.Errorf("state: lock %s: %w", name, err)
	}
	// Our PID, for the message the next one gets.
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return &stateLock{f: f}, nil
}

// release drops the lock (nil-safe, idempotent).
func (l *stateLock) release() {
	if l == nil || l.f == nil {
		return
	}
	l.f.Close()
	l.f = nil
}
