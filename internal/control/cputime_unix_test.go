//go:build unix

package control_test

import (
	"syscall"
	"time"
)

// cpuTime is the CPU time the process used so far (both ends: control and
// the fake agents decoding their maps).
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
