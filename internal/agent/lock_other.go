//go:build !unix

package agent

type stateLock struct{}

// lockState does nothing here: only Unix has flock.
func lockState(string) (*stateLock, error) { return &stateLock{}, nil }

func (l *stateLock) release() {}
