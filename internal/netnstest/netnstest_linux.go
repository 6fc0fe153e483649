package netnstest

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"sync/atomic"
	"testing"

	"golang.org/x/sys/unix"
)

var seq atomic.Int32

// New makes a network namespace named "<prefix>-<pid>-<n>", deleted in
// cleanup, and returns its name and a function that runs fn on an OS
// thread inside it (the thread is discarded afterwards, never returned to
// the root namespace). It skips the test when not root or when one of
// tools (e.g. "nft", "ping") is not installed; "ip" is always needed.
func New(tb testing.TB, prefix string, tools ...string) (name string, do func(fn func())) {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("needs root (network namespaces)")
	}
	for _, bin := range append([]string{"ip"}, tools...) {
		if _, err := exec.LookPath(bin); err != nil {
			tb.Skipf("%s is not installed", bin)
		}
	}
	name = fmt.Sprintf("%s-%d-%d", prefix, os.Getpid(), seq.Add(1))
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		tb.Fatalf("ip netns add %s: %v: %s", name, err, out)
	}
	tb.Cleanup(func() { _ = exec.Command("ip", "netns", "del", name).Run() })
	return name, func(fn func()) {
		done := make(chan struct{})
		go func() {
			defer close(done)
			runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
			fd, err := unix.Open("/run/netns/"+name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
			if err != nil {
				tb.Errorf("open netns %s: %v", name, err)
				return
			}
			defer unix.Close(fd)
			if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
				tb.Errorf("setns %s: %v", name, err)
				return
			}
			fn()
		}()
		<-done
	}
}
