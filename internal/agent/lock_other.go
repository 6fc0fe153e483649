//go:build !unix

package agent

// LockFile is the file in the state directory an agent holds a lock on
// (on Unix; elsewhere the directory is not locked).
const LockFile = "lock"

type stateLock struct{}

// lockState does nothing here: only Unix has flock.
func lockState(string) (*stateLock, error) { return &stateLock{}, nil }

func (l *stateLock) release() {}
