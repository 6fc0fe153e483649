package pgtest

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// clockTick is USER_HZ, the unit of /proc/PID/stat's times (100 on every
// Linux that Go supports).
const clockTick = 100

// CPUTime is the CPU time (user and system) the server has used so far:
// the postmaster, its live backends, and the backends that have exited.
// Benchmarks take the difference over a run to say where time goes.
func (s *Server) CPUTime() (time.Duration, error) {
	pm, err := readPID(filepath.Join(s.dataDir(), "postmaster.pid"))
	if err != nil {
		return 0, fmt.Errorf("pgtest: server not running: %w", err)
	}
	ticks, _, err := procTicks(pm, true)
	if err != nil {
		return 0, err
	}
	procs, _ := filepath.Glob("/proc/[0-9]*")
	for _, p := range procs {
		pid, err := strconv.Atoi(filepath.Base(p))
		if err != nil || pid == pm {
			continue
		}
		t, parent, err := procTicks(pid, false)
		if err == nil && parent == pm {
			ticks += t
		}
	}
	return time.Duration(ticks) * time.Second / clockTick, nil
}

// procTicks reads utime+stime of pid (and its reaped children's when
// children) and its parent's PID.
func procTicks(pid int, children bool) (ticks int64, ppid int, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, err
	}
	// The command name may hold spaces: fields start after its ')'.
	rest := string(b)
	if i := strings.LastIndexByte(rest, ')'); i >= 0 {
		rest = rest[i+1:]
	}
	f := strings.Fields(rest) // f[0] is field 3 (state)
	if len(f) < 15 {
		return 0, 0, fmt.Errorf("pgtest: /proc/%d/stat: short", pid)
	}
	ppid, _ = strconv.Atoi(f[1])
	last := 12 // utime (14), stime (15)
	if children {
		last = 14 // cutime (16), cstime (17)
	}
	for _, x := range f[11 : last+1] {
		n, _ := strconv.ParseInt(x, 10, 64)
		ticks += n
	}
	return ticks, ppid, nil
}
