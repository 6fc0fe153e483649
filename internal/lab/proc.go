//go:build linux

package lab

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Proc is a process running inside a host's namespace. Its stdout and
// stderr go, interleaved, to LogPath. The lab stops it at teardown.
type Proc struct {
	Name    string
	PID     int
	LogPath string

	cmd  *exec.Cmd
	done chan struct{}
	err  error // the exit, valid once done is closed

	stopOnce sync.Once
}

// Start runs args inside the host's namespace, in a UTS namespace of its
// own whose hostname is the host's name (so meshd agents get distinct peer
// names). name names the log file (NAME.log in the lab's directory).
func (h *Host) Start(name string, args ...string) (*Proc, error) {
	l := h.lab
	logPath := filepath.Join(l.dir, uniqueLog(l.dir, name))
	f, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	full := append([]string{"netns", "exec", h.n.ns, "sh", "-c", `echo "$0" >/proc/sys/kernel/hostname && exec "$@"`, h.Name()}, args...)
	cmd := exec.Command("ip", full...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Setpgid:    true,            // our signals only, not the terminal's
		Pdeathsig:  syscall.SIGKILL, // the test process died: so do we
		Cloneflags: syscall.CLONE_NEWUTS,
	}
	l.record("[" + h.Name() + "] " + strings.Join(args, " ") + " &")
	var p *Proc
	err = l.building(func() error {
		if err := cmd.Start(); err != nil {
			return err
		}
		p = &Proc{Name: name, PID: cmd.Process.Pid, LogPath: logPath, cmd: cmd, done: make(chan struct{})}
		go func() {
			p.err = cmd.Wait()
			f.Close()
			close(p.done)
		}()
		l.addProc(p)
		return nil
	})
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s in %s: %w", name, h.Name(), err)
	}
	return p, nil
}

func uniqueLog(dir, name string) string {
	base := name + ".log"
	for i := 2; i < 1000; i++ {
		if _, err := os.Stat(filepath.Join(dir, base)); errors.Is(err, os.ErrNotExist) {
			break
		}
		base = fmt.Sprintf("%s.%d.log", name, i)
	}
	return base
}

// Output is what the process has written so far.
func (p *Proc) Output() string {
	b, _ := os.ReadFile(p.LogPath)
	return string(b)
}

// Done is closed when the process has exited.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Exited reports whether the process has exited, and how.
func (p *Proc) Exited() (bool, error) {
	select {
	case <-p.done:
		return true, p.err
	default:
		return false, nil
	}
}

// Signal sends sig to the process's group.
func (p *Proc) Signal(sig syscall.Signal) error {
	if exited, _ := p.Exited(); exited {
		return nil
	}
	return syscall.Kill(-p.PID, sig)
}

// Stop sends SIGTERM, waits up to 5 s for the exit, then kills the
// process. It returns the exit error; calling it again returns the same.
func (p *Proc) Stop() error {
	p.stopOnce.Do(func() {
		p.Signal(syscall.SIGTERM)
		t := time.NewTimer(5 * time.Second)
		defer t.Stop()
		select {
		case <-p.done:
		case <-t.C:
			p.Signal(syscall.SIGKILL)
			<-p.done
		}
	})
	<-p.done
	return p.err
}

// Kill kills the process at once (SIGKILL) and waits for it.
func (p *Proc) Kill() {
	p.stopOnce.Do(func() {
		p.Signal(syscall.SIGKILL)
	})
	<-p.done
}

// WaitOutput polls the log until re matches and returns the submatches.
// It fails early when the process exits first.
func (p *Proc) WaitOutput(ctx context.Context, re *regexp.Regexp) ([]string, error) {
	for i := 0; i < 100000; i++ { // bounded; ctx ends sooner
		if m := re.FindStringSubmatch(p.Output()); m != nil {
			return m, nil
		}
		select {
		case <-p.done:
			if m := re.FindStringSubmatch(p.Output()); m != nil {
				return m, nil
			}
			return nil, &ExitError{Proc: p, Err: p.err}
		default:
		}
		if !Pause(ctx, 20*time.Millisecond) {
			break
		}
	}
	return nil, fmt.Errorf("%s: no %q in its output: %w", p.Name, re, ctx.Err())
}

// ExitError is a process that exited while the lab waited for it.
type ExitError struct {
	Proc *Proc
	Err  error
}

func (e *ExitError) Error() string {
	return fmt.Sprintf("%s exited (%v); last output:\n%s", e.Proc.Name, e.Err, tail(e.Proc.Output(), 30))
}

func (e *ExitError) Unwrap() error { return e.Err }

// stopAll stops procs at once: SIGTERM to all, up to 5 s for all of them
// to exit, then SIGKILL.
func stopAll(procs []*Proc) {
	var wg sync.WaitGroup
	for _, p := range procs {
		wg.Add(1)
		go func() { defer wg.Done(); p.Stop() }()
	}
	wg.Wait()
}

// RSS is the process's resident memory in bytes (VmRSS).
func (p *Proc) RSS() (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.PID))
	if err != nil {
		return 0, fmt.Errorf("rss of %s: %w", p.Name, err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			var kb int64
			if _, err := fmt.Sscanf(strings.TrimSpace(rest), "%d kB", &kb); err != nil {
				return 0, fmt.Errorf("rss of %s: %q: %w", p.Name, line, err)
			}
			return kb * 1024, nil
		}
	}
	return 0, fmt.Errorf("rss of %s: no VmRSS (exited?)", p.Name)
}
